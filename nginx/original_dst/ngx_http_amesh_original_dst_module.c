/*
 * Licensed under the Apache License, Version 2.0.
 *
 * http variables with the original destination of the client connection (see
 * ngx_amesh_original_dst.h):
 *
 *   $connection_original_dst           port, "8080" (what amesh's routes match by default)
 *   $connection_original_dst_port      port, "8080"
 *   $connection_original_dst_addr      address, "10.0.0.1" or "2001:db8::1"
 *   $connection_original_dst_endpoint  "10.0.0.1:8080" or "[2001:db8::1]:8080"
 *
 * The kernel is asked once per client connection: the answer is kept in the connection's
 * pool, so keepalive requests and HTTP/2 streams reuse it.
 *
 *   amesh_capture_listener ADDRESS PORT;   (server, repeatable)
 *
 * makes the listening socket ADDRESS (`listen ADDRESS proxy_protocol`) the HTTP hop of amesh's
 * stream front, which takes the connections captured on PORT and passes HTTP on with a PROXY
 * header: client and original destination. On that socket a connection looks as if the
 * client had reached nginx on PORT through the capture directly: $remote_addr, $remote_port
 * (and $realip_remote_addr) are the header's source, $server_addr its destination address,
 * $server_port is PORT, $connection_original_dst* the header's destination. A connection
 * without a PROXY header that has addresses is refused: the socket is internal.
 *
 * The same module has the downstream TLS peer's variables ($amesh_peer_*,
 * ngx_http_amesh_tls_peer.c): what Envoy's listener knows about a client connection, amesh's
 * HTTP side reads from this module. And
 *
 *   amesh_ssl_alpn_optional on | off;   (http, server; default off)
 *
 * lets a server's TLS handshakes go on without ALPN when the client offers no protocol nginx
 * has, as Envoy's do (ngx_http_amesh_ssl_alpn.c).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_amesh_original_dst.h"
#include "ngx_http_amesh_tls_peer.h"


/* amesh_capture_listener ADDRESS PORT */
typedef struct {
    ngx_addr_t   addr;
    in_port_t    port;
} ngx_http_amesh_capture_listener_t;


typedef struct {
    ngx_array_t  listeners;    /* of ngx_http_amesh_capture_listener_t */
} ngx_http_amesh_original_dst_main_conf_t;


static ngx_int_t ngx_http_amesh_original_dst_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_amesh_original_dst_init(ngx_conf_t *cf);
static void *ngx_http_amesh_original_dst_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_amesh_original_dst_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_amesh_original_dst_merge_srv_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_amesh_capture_listener(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_amesh_original_dst_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_amesh_original_dst_cleanup(void *data);


static ngx_command_t  ngx_http_amesh_original_dst_commands[] = {

    { ngx_string("amesh_capture_listener"),
      NGX_HTTP_SRV_CONF|NGX_CONF_TAKE2,
      ngx_http_amesh_capture_listener,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("amesh_ssl_alpn_optional"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_amesh_original_dst_srv_conf_t, ssl_alpn_optional),
      NULL },

      ngx_null_command
};


static ngx_http_variable_t  ngx_http_amesh_original_dst_vars[] = {

    { ngx_string("connection_original_dst"), NULL,
      ngx_http_amesh_original_dst_variable,
      offsetof(ngx_amesh_original_dst_t, port), 0, 0 },

    { ngx_string("connection_original_dst_port"), NULL,
      ngx_http_amesh_original_dst_variable,
      offsetof(ngx_amesh_original_dst_t, port), 0, 0 },

    { ngx_string("connection_original_dst_addr"), NULL,
      ngx_http_amesh_original_dst_variable,
      offsetof(ngx_amesh_original_dst_t, addr), 0, 0 },

    { ngx_string("connection_original_dst_endpoint"), NULL,
      ngx_http_amesh_original_dst_variable,
      offsetof(ngx_amesh_original_dst_t, endpoint), 0, 0 },

      ngx_http_null_variable
};


static ngx_http_module_t  ngx_http_amesh_original_dst_module_ctx = {
    ngx_http_amesh_original_dst_add_variables,  /* preconfiguration */
    ngx_http_amesh_original_dst_init,           /* postconfiguration */

    ngx_http_amesh_original_dst_create_main_conf, /* create main configuration */
    NULL,                                       /* init main configuration */

    ngx_http_amesh_original_dst_create_srv_conf, /* create server configuration */
    ngx_http_amesh_original_dst_merge_srv_conf, /* merge server configuration */

    NULL,                                       /* create location configuration */
    NULL                                        /* merge location configuration */
};


ngx_module_t  ngx_http_amesh_original_dst_module = {
    NGX_MODULE_V1,
    &ngx_http_amesh_original_dst_module_ctx,    /* module context */
    ngx_http_amesh_original_dst_commands,       /* module directives */
    NGX_HTTP_MODULE,                            /* module type */
    NULL,                                       /* init master */
    NULL,                                       /* init module */
    NULL,                                       /* init process */
    NULL,                                       /* init thread */
    NULL,                                       /* exit thread */
    NULL,                                       /* exit process */
    NULL,                                       /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * The variable named name that nginx's core or an earlier module already declared, or NULL.
 * APISIX's OpenResty build (apisix-runtime, apisix-nginx-module's
 * nginx-connection-original-dst.patch) declares $connection_original_dst in the core, with
 * "address:port" for IPv4 clients and nothing otherwise; ngx_http_add_variable would refuse
 * this module's declaration as a duplicate.
 */
static ngx_http_variable_t *
ngx_http_amesh_original_dst_declared(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                  i;
    ngx_hash_key_t             *key;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    key = cmcf->variables_keys->keys.elts;
    for (i = 0; i < cmcf->variables_keys->keys.nelts; i++) {
        if (name->len == key[i].key.len
            && ngx_strncasecmp(name->data, key[i].key.data, name->len) == 0)
        {
            return key[i].value;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_amesh_original_dst_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_amesh_original_dst_vars; v->name.len; v++) {
        var = ngx_http_amesh_original_dst_declared(cf, &v->name);

        if (var != NULL) {
            /*
             * Take the variable over, so that it means the same in every build and in
             * stream (the port, for IPv4 and IPv6): amesh's routes compare it with a port.
             */
            ngx_conf_log_error(NGX_LOG_INFO, cf, 0,
                               "amesh original dst: \"%V\" is declared by this "
                               "nginx build, this module's value replaces it",
                               &v->name);
            var->flags = v->flags;

        } else {
            var = ngx_http_add_variable(cf, &v->name, v->flags);
            if (var == NULL) {
                return NGX_ERROR;
            }
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return ngx_http_amesh_tls_peer_add_variables(cf);
}


static void *
ngx_http_amesh_original_dst_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_amesh_original_dst_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_amesh_original_dst_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&amcf->listeners, cf->pool, 2,
                       sizeof(ngx_http_amesh_capture_listener_t))
        != NGX_OK)
    {
        return NULL;
    }

    return amcf;
}


static void *
ngx_http_amesh_original_dst_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_amesh_original_dst_srv_conf_t  *ascf;

    ascf = ngx_pcalloc(cf->pool, sizeof(ngx_http_amesh_original_dst_srv_conf_t));
    if (ascf == NULL) {
        return NULL;
    }

    ascf->ssl_alpn_optional = NGX_CONF_UNSET;

    return ascf;
}


static char *
ngx_http_amesh_original_dst_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_amesh_original_dst_srv_conf_t *prev = parent;
    ngx_http_amesh_original_dst_srv_conf_t *conf = child;

    ngx_conf_merge_value(conf->ssl_alpn_optional, prev->ssl_alpn_optional, 0);

    return NGX_CONF_OK;
}


/* amesh_capture_listener ADDRESS PORT: kept in the main conf, as listening sockets are */
static char *
ngx_http_amesh_capture_listener(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_amesh_original_dst_main_conf_t  *amcf = conf;

    ngx_int_t                           port;
    ngx_url_t                           u;
    ngx_str_t                          *value;
    ngx_http_amesh_capture_listener_t  *l;

    value = cf->args->elts;

    /* parsed as `listen` parses its address, so that the two compare equal */
    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = value[1];
    u.listen = 1;
    u.default_port = 80;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s in \"%V\"",
                               u.err, &u.url);
        }

        return NGX_CONF_ERROR;
    }

    if (u.naddrs != 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is not one address", &u.url);
        return NGX_CONF_ERROR;
    }

    port = ngx_atoi(value[2].data, value[2].len);
    if (port < 1 || port > 65535) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid port \"%V\"",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    l = ngx_array_push(&amcf->listeners);
    if (l == NULL) {
        return NGX_CONF_ERROR;
    }

    /* ngx_parse_url may point the address into u */
    l->addr.sockaddr = ngx_palloc(cf->pool, u.addrs[0].socklen);
    if (l->addr.sockaddr == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(l->addr.sockaddr, u.addrs[0].sockaddr, u.addrs[0].socklen);
    l->addr.socklen = u.addrs[0].socklen;
    l->addr.name = value[1];
    l->port = (in_port_t) port;

    return NGX_CONF_OK;
}


ngx_connection_t *
ngx_http_amesh_socket_connection(ngx_http_request_t *r)
{
#if (NGX_HTTP_V2)
    if (r->stream) {
        return r->stream->connection->connection;
    }
#endif

    return r->connection;
}


/* The capture port of the listening socket c was accepted on, 0 for other sockets. */
static in_port_t
ngx_http_amesh_capture_port(ngx_http_request_t *r, ngx_connection_t *c)
{
    ngx_uint_t                                i;
    ngx_http_amesh_capture_listener_t        *l;
    ngx_http_amesh_original_dst_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_amesh_original_dst_module);

    l = amcf->listeners.elts;
    for (i = 0; i < amcf->listeners.nelts; i++) {
        if (ngx_cmp_sockaddr(c->listening->sockaddr, c->listening->socklen,
                             l[i].addr.sockaddr, l[i].addr.socklen, 1)
            == NGX_OK)
        {
            return l[i].port;
        }
    }

    return 0;
}


/*
 * A connection of the capture listener for port: its addresses become those of its PROXY
 * header, the client's and the original destination's, for good (a keepalive connection
 * is one client's). NGX_DECLINED for a header without them ("PROXY UNKNOWN", a v2 LOCAL
 * command).
 */
static ngx_int_t
ngx_http_amesh_capture_accept(ngx_connection_t *c, in_port_t port,
    ngx_amesh_original_dst_t *dst)
{
    u_char                *text;
    ngx_int_t              rc;
    ngx_addr_t             src, local;
    ngx_proxy_protocol_t  *pp;

    pp = c->proxy_protocol;

    if (pp == NULL
        || ngx_parse_addr(c->pool, &src, pp->src_addr.data, pp->src_addr.len)
           != NGX_OK
        || ngx_parse_addr(c->pool, &local, pp->dst_addr.data, pp->dst_addr.len)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    /* $connection_original_dst*: the destination, with its port */
    ngx_inet_set_port(local.sockaddr, pp->dst_port);

    rc = ngx_amesh_original_dst_set(c->pool, local.sockaddr, local.socklen, dst);
    if (rc != NGX_OK) {
        return rc;
    }

    text = ngx_pnalloc(c->pool, NGX_SOCKADDR_STRLEN);
    if (text == NULL) {
        return NGX_ERROR;
    }

    /* $remote_addr, $remote_port, $realip_remote_addr, the client in log lines */
    ngx_inet_set_port(src.sockaddr, pp->src_port);
    c->sockaddr = src.sockaddr;
    c->socklen = src.socklen;
    c->addr_text.len = ngx_sock_ntop(src.sockaddr, src.socklen, text,
                                     NGX_SOCKADDR_STRLEN, 0);
    c->addr_text.data = text;

    /* $server_addr, $server_port: the destination's address on the capture port */
    ngx_inet_set_port(local.sockaddr, port);
    c->local_sockaddr = local.sockaddr;
    c->local_socklen = local.socklen;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "amesh original dst: %V from the PROXY header", &dst->endpoint);

    return NGX_OK;
}


/*
 * The connection's answer, found among its pool's cleanups by the handler that marks it (the
 * way ngx_http_realip_module keeps per-connection state: http has no per-connection context).
 */
static ngx_amesh_original_dst_t *
ngx_http_amesh_original_dst_get(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    in_port_t            port;
    ngx_connection_t    *c;
    ngx_pool_cleanup_t  *cln;

    c = ngx_http_amesh_socket_connection(r);

    for (cln = c->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_amesh_original_dst_cleanup) {
            return cln->data;
        }
    }

    cln = ngx_pool_cleanup_add(c->pool, sizeof(ngx_amesh_original_dst_t));
    if (cln == NULL) {
        return NULL;
    }

    ngx_memzero(cln->data, sizeof(ngx_amesh_original_dst_t));

    port = ngx_http_amesh_capture_port(r, c);

    if (port) {
        rc = ngx_http_amesh_capture_accept(c, port, cln->data);

    } else {
        rc = ngx_amesh_original_dst_resolve(c, c->pool, cln->data);
    }

    if (rc == NGX_ERROR) {
        /* a cleanup without a handler is skipped when the pool is destroyed */
        return NULL;
    }

    /*
     * NGX_DECLINED (a unix socket; a capture listener's connection without addresses) is
     * kept too, as empty strings
     */
    cln->handler = ngx_http_amesh_original_dst_cleanup;

    return cln->data;
}


/*
 * Post-read handler on capture listeners: the connection's addresses become its PROXY
 * header's before anything else reads them. It runs before ngx_http_realip_module's
 * (a module registered later runs earlier in a phase, and this one always comes after it), so
 * `set_real_ip_from unix:` does not make a client's X-Real-IP trusted.
 */
static ngx_int_t
ngx_http_amesh_capture_handler(ngx_http_request_t *r)
{
    ngx_connection_t          *c, *fc;
    ngx_amesh_original_dst_t  *dst;

    c = ngx_http_amesh_socket_connection(r);

    if (ngx_http_amesh_capture_port(r, c) == 0) {
        return NGX_DECLINED;
    }

    dst = ngx_http_amesh_original_dst_get(r);
    if (dst == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (dst->port.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "amesh capture listener: no PROXY header with "
                      "addresses, connection refused");
        return NGX_HTTP_BAD_REQUEST;
    }

    fc = r->connection;

    if (fc != c) {
        /* an HTTP/2 stream's copy may predate the change */
        fc->sockaddr = c->sockaddr;
        fc->socklen = c->socklen;
        fc->addr_text = c->addr_text;
        fc->local_sockaddr = c->local_sockaddr;
        fc->local_socklen = c->local_socklen;
    }

    return NGX_DECLINED;
}


/* Whether some server has `listen ADDRESS proxy_protocol` for the capture listener l. */
static ngx_uint_t
ngx_http_amesh_capture_listen_declared(ngx_http_core_main_conf_t *cmcf,
    ngx_http_amesh_capture_listener_t *l)
{
    ngx_uint_t             p, a;
    ngx_http_conf_port_t  *port;
    ngx_http_conf_addr_t  *addr;

    if (cmcf->ports == NULL) {
        return 0;
    }

    port = cmcf->ports->elts;
    for (p = 0; p < cmcf->ports->nelts; p++) {

        addr = port[p].addrs.elts;
        for (a = 0; a < port[p].addrs.nelts; a++) {
            if (addr[a].opt.proxy_protocol
                && ngx_cmp_sockaddr(addr[a].opt.sockaddr, addr[a].opt.socklen,
                                    l->addr.sockaddr, l->addr.socklen, 1)
                   == NGX_OK)
            {
                return 1;
            }
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_amesh_original_dst_init(ngx_conf_t *cf)
{
    ngx_uint_t                                i;
    ngx_http_handler_pt                      *h;
    ngx_http_core_main_conf_t                *cmcf;
    ngx_http_amesh_capture_listener_t        *l;
    ngx_http_amesh_original_dst_main_conf_t  *amcf;

    if (ngx_http_amesh_ssl_alpn_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_amesh_original_dst_module);

    if (amcf->listeners.nelts == 0) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    l = amcf->listeners.elts;
    for (i = 0; i < amcf->listeners.nelts; i++) {
        if (!ngx_http_amesh_capture_listen_declared(cmcf, &l[i])) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "amesh_capture_listener %V: no \"listen %V "
                          "proxy_protocol\"", &l[i].addr.name, &l[i].addr.name);
            return NGX_ERROR;
        }
    }

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_amesh_capture_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_amesh_original_dst_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                 *s;
    ngx_amesh_original_dst_t  *dst;

    dst = ngx_http_amesh_original_dst_get(r);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    if (dst->port.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((char *) dst + data);

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}


static void
ngx_http_amesh_original_dst_cleanup(void *data)
{
    /* nothing to free: the strings live in the same pool; the handler marks the entry */
}
