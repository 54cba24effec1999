/*
 * Licensed under the Apache License, Version 2.0.
 *
 * stream variables with the original destination of the client connection, named and
 * formatted as the http module's (see ngx_http_amesh_original_dst_module.c):
 *
 *   $connection_original_dst           port
 *   $connection_original_dst_port      port
 *   $connection_original_dst_addr      address
 *   $connection_original_dst_endpoint  address:port, IPv6 in brackets
 *
 * and what amesh's stream front (the capture ports as a stream server) needs besides:
 *
 *   amesh_original_dst_local on|off;   a redirected connection's local address becomes its
 *                                      original destination, so $server_addr, $server_port,
 *                                      stream routes on them and the PROXY header nginx sends
 *                                      upstream carry it, as with Envoy's original_dst filter
 *   $connection_listen_port            the port of the listening socket (15001, 15006)
 *   $amesh_upstream_proxy_protocol     set to "on" (by Lua or `set`), the upstream connection
 *                                      starts with a PROXY v1 header though the server has
 *                                      `proxy_protocol off`: the stream front hands HTTP to the
 *                                      http server with the client and the destination in it
 *
 * and, on a TLS server (`listen ... ssl`, the stream server's socket that terminates Istio
 * mTLS in front of TCP), the downstream TLS peer's variables of ngx_amesh_tls_peer.h, as
 * the http module has them ($amesh_peer_verified, $amesh_peer_uri_sans, ...), for
 * amesh's subject alt name check and network RBAC.
 *
 * A stream session is one connection: the answers are kept in the session's module
 * context.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>

#include "ngx_amesh_original_dst.h"

#if (NGX_STREAM_SSL)
#include "ngx_amesh_tls_peer.h"
#endif


typedef struct {
    ngx_flag_t                        local;
} ngx_stream_amesh_original_dst_srv_conf_t;


/* An upstream's own peer.init, which this module's wraps. */
typedef struct {
    ngx_stream_upstream_srv_conf_t   *upstream;
    ngx_stream_upstream_init_peer_pt  init;
} ngx_stream_amesh_original_dst_upstream_t;


typedef struct {
    ngx_array_t                       upstreams;
    ngx_int_t                         proxy_protocol_index;
} ngx_stream_amesh_original_dst_main_conf_t;


typedef struct {
    ngx_amesh_original_dst_t          dst;
    unsigned                          resolved:1;
    /* the session's upstream peer.get, which this module's wraps */
    ngx_event_get_peer_pt             get;
#if (NGX_STREAM_SSL)
    ngx_amesh_tls_peer_t              tls_peer;
    unsigned                          tls_peer_read:1;
#endif
} ngx_stream_amesh_original_dst_ctx_t;


static ngx_int_t ngx_stream_amesh_original_dst_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_stream_amesh_original_dst_init(ngx_conf_t *cf);
static void *ngx_stream_amesh_original_dst_create_main_conf(ngx_conf_t *cf);
static void *ngx_stream_amesh_original_dst_create_srv_conf(ngx_conf_t *cf);
static char *ngx_stream_amesh_original_dst_merge_srv_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_stream_amesh_original_dst_variable(
    ngx_stream_session_t *s, ngx_stream_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_stream_amesh_listen_port_variable(
    ngx_stream_session_t *s, ngx_stream_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_stream_amesh_unset_variable(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data);
#if (NGX_STREAM_SSL)
static ngx_int_t ngx_stream_amesh_tls_peer_variable(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data);
#endif


static ngx_command_t  ngx_stream_amesh_original_dst_commands[] = {

    { ngx_string("amesh_original_dst_local"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_amesh_original_dst_srv_conf_t, local),
      NULL },

      ngx_null_command
};


static ngx_stream_variable_t  ngx_stream_amesh_original_dst_vars[] = {

    { ngx_string("connection_original_dst"), NULL,
      ngx_stream_amesh_original_dst_variable,
      offsetof(ngx_amesh_original_dst_t, port), 0, 0 },

    { ngx_string("connection_original_dst_port"), NULL,
      ngx_stream_amesh_original_dst_variable,
      offsetof(ngx_amesh_original_dst_t, port), 0, 0 },

    { ngx_string("connection_original_dst_addr"), NULL,
      ngx_stream_amesh_original_dst_variable,
      offsetof(ngx_amesh_original_dst_t, addr), 0, 0 },

    { ngx_string("connection_original_dst_endpoint"), NULL,
      ngx_stream_amesh_original_dst_variable,
      offsetof(ngx_amesh_original_dst_t, endpoint), 0, 0 },

    { ngx_string("connection_listen_port"), NULL,
      ngx_stream_amesh_listen_port_variable, 0, 0, 0 },

    /* empty until set; an indexed changeable variable keeps what `set` or Lua gives it */
    { ngx_string("amesh_upstream_proxy_protocol"), NULL,
      ngx_stream_amesh_unset_variable, 0, NGX_STREAM_VAR_CHANGEABLE, 0 },

#if (NGX_STREAM_SSL)
    NGX_AMESH_TLS_PEER_VARIABLES(ngx_stream_amesh_tls_peer_variable),
#endif

      ngx_stream_null_variable
};


static ngx_str_t  ngx_stream_amesh_upstream_proxy_protocol =
    ngx_string("amesh_upstream_proxy_protocol");


static ngx_stream_module_t  ngx_stream_amesh_original_dst_module_ctx = {
    ngx_stream_amesh_original_dst_add_variables,    /* preconfiguration */
    ngx_stream_amesh_original_dst_init,             /* postconfiguration */

    ngx_stream_amesh_original_dst_create_main_conf, /* create main configuration */
    NULL,                                           /* init main configuration */

    ngx_stream_amesh_original_dst_create_srv_conf,  /* create server configuration */
    ngx_stream_amesh_original_dst_merge_srv_conf    /* merge server configuration */
};


ngx_module_t  ngx_stream_amesh_original_dst_module = {
    NGX_MODULE_V1,
    &ngx_stream_amesh_original_dst_module_ctx,    /* module context */
    ngx_stream_amesh_original_dst_commands,       /* module directives */
    NGX_STREAM_MODULE,                            /* module type */
    NULL,                                         /* init master */
    NULL,                                         /* init module */
    NULL,                                         /* init process */
    NULL,                                         /* init thread */
    NULL,                                         /* exit thread */
    NULL,                                         /* exit process */
    NULL,                                         /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_stream_amesh_original_dst_add_variables(ngx_conf_t *cf)
{
    ngx_stream_variable_t  *var, *v;

    for (v = ngx_stream_amesh_original_dst_vars; v->name.len; v++) {
        var = ngx_stream_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static void *
ngx_stream_amesh_original_dst_create_main_conf(ngx_conf_t *cf)
{
    ngx_stream_amesh_original_dst_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_stream_amesh_original_dst_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&amcf->upstreams, cf->pool, 4,
                       sizeof(ngx_stream_amesh_original_dst_upstream_t))
        != NGX_OK)
    {
        return NULL;
    }

    return amcf;
}


static void *
ngx_stream_amesh_original_dst_create_srv_conf(ngx_conf_t *cf)
{
    ngx_stream_amesh_original_dst_srv_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_stream_amesh_original_dst_srv_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->local = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_stream_amesh_original_dst_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_stream_amesh_original_dst_srv_conf_t  *prev = parent;
    ngx_stream_amesh_original_dst_srv_conf_t  *conf = child;

    ngx_conf_merge_value(conf->local, prev->local, 0);

    return NGX_CONF_OK;
}


/* The session's context, made on first use; with resolve, the original destination in it. */
static ngx_stream_amesh_original_dst_ctx_t *
ngx_stream_amesh_original_dst_ctx(ngx_stream_session_t *s, ngx_uint_t resolve)
{
    ngx_stream_amesh_original_dst_ctx_t  *ctx;

    ctx = ngx_stream_get_module_ctx(s, ngx_stream_amesh_original_dst_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(s->connection->pool,
                          sizeof(ngx_stream_amesh_original_dst_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_stream_set_ctx(s, ctx, ngx_stream_amesh_original_dst_module);
    }

    if (resolve && !ctx->resolved) {
        if (ngx_amesh_original_dst_resolve(s->connection, s->connection->pool,
                                           &ctx->dst)
            == NGX_ERROR)
        {
            return NULL;
        }

        /* NGX_DECLINED (a unix socket) is kept too, as empty strings */
        ctx->resolved = 1;
    }

    return ctx;
}


/*
 * amesh_original_dst_local: before preread (a post-accept handler), a redirected connection's
 * local address becomes its original destination; the listening socket, and so
 * $connection_listen_port, stays.
 */
static ngx_int_t
ngx_stream_amesh_original_dst_local_handler(ngx_stream_session_t *s)
{
    socklen_t                                  len;
    ngx_sockaddr_t                            *sa;
    ngx_connection_t                          *c;
    ngx_stream_amesh_original_dst_ctx_t       *ctx;
    ngx_stream_amesh_original_dst_srv_conf_t  *conf;

    conf = ngx_stream_get_module_srv_conf(s, ngx_stream_amesh_original_dst_module);
    if (!conf->local) {
        return NGX_DECLINED;
    }

    ctx = ngx_stream_amesh_original_dst_ctx(s, 1);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (!ctx->dst.tracked) {
        /* not redirected: the local address is the destination already */
        return NGX_DECLINED;
    }

    c = s->connection;

    /* a new one: a socket bound to one address shares the listening's sockaddr */
    sa = ngx_palloc(c->pool, sizeof(ngx_sockaddr_t));
    if (sa == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(sa, &ctx->dst.sockaddr, ctx->dst.socklen);
    len = ctx->dst.socklen;

#if (NGX_HAVE_INET6)
    if (c->local_sockaddr->sa_family == AF_INET6
        && sa->sockaddr.sa_family == AF_INET)
    {
        /*
         * An IPv4 client of a dual-stack socket: the address stays in the socket's
         * (and the client address's) IPv6 form, ::ffff:a.b.c.d, so that a PROXY header
         * nginx writes ("TCP6", from the client's family) holds two IPv6 addresses.
         */
        struct sockaddr_in    sin;
        struct sockaddr_in6  *sin6 = &sa->sockaddr_in6;

        sin = ctx->dst.sockaddr.sockaddr_in;

        ngx_memzero(sin6, sizeof(struct sockaddr_in6));
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = sin.sin_port;
        sin6->sin6_addr.s6_addr[10] = 0xff;
        sin6->sin6_addr.s6_addr[11] = 0xff;
        ngx_memcpy(&sin6->sin6_addr.s6_addr[12], &sin.sin_addr, 4);
        len = sizeof(struct sockaddr_in6);
    }
#endif

    c->local_sockaddr = &sa->sockaddr;
    c->local_socklen = len;

    ngx_log_debug1(NGX_LOG_DEBUG_STREAM, c->log, 0,
                   "amesh original dst: local address %V", &ctx->dst.endpoint);

    return NGX_DECLINED;
}


/*
 * The upstream's own get, then a PROXY v1 header if $amesh_upstream_proxy_protocol is "on".
 * It has to be here: ngx_stream_proxy_connect sets the connection's proxy_protocol from the
 * server's `proxy_protocol` just before it asks for a peer, on every attempt.
 */
static ngx_int_t
ngx_stream_amesh_original_dst_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_int_t                                   rc;
    ngx_stream_session_t                       *s;
    ngx_stream_variable_value_t                *v;
    ngx_stream_amesh_original_dst_ctx_t        *ctx;
    ngx_stream_amesh_original_dst_main_conf_t  *amcf;

    /*
     * The peer logs with the client connection's log, whose data is the session
     * (ngx_stream_init_connection; ngx_stream_proxy_log_error reads it so too). data
     * stays the upstream's own: balancer_by_lua finds its state in u->peer.data.
     */
    s = pc->log->data;

    ctx = ngx_stream_get_module_ctx(s, ngx_stream_amesh_original_dst_module);

    rc = ctx->get(pc, data);

    amcf = ngx_stream_get_module_main_conf(s, ngx_stream_amesh_original_dst_module);

    /* read after the get: a Lua balancer may set it too */
    v = ngx_stream_get_indexed_variable(s, amcf->proxy_protocol_index);

    if (v != NULL && !v->not_found && v->len == 2
        && ngx_strncmp(v->data, "on", 2) == 0
        && !s->upstream->proxy_protocol)
    {
        /* v1; a version the server's `proxy_protocol` chose is kept */
        s->upstream->proxy_protocol = 1;
    }

    return rc;
}


static ngx_int_t
ngx_stream_amesh_original_dst_init_peer(ngx_stream_session_t *s,
    ngx_stream_upstream_srv_conf_t *us)
{
    ngx_uint_t                                  i;
    ngx_stream_amesh_original_dst_ctx_t        *ctx;
    ngx_stream_amesh_original_dst_upstream_t   *u;
    ngx_stream_amesh_original_dst_main_conf_t  *amcf;

    amcf = ngx_stream_get_module_main_conf(s, ngx_stream_amesh_original_dst_module);

    /* a few upstreams (APISIX has one): a search costs less than a table */
    u = amcf->upstreams.elts;
    for (i = 0; i < amcf->upstreams.nelts; i++) {
        if (u[i].upstream == us) {
            break;
        }
    }

    if (i == amcf->upstreams.nelts) {
        return NGX_ERROR;
    }

    if (u[i].init(s, us) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx = ngx_stream_amesh_original_dst_ctx(s, 0);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->get = s->upstream->peer.get;
    s->upstream->peer.get = ngx_stream_amesh_original_dst_get_peer;

    return NGX_OK;
}


static ngx_int_t
ngx_stream_amesh_original_dst_init(ngx_conf_t *cf)
{
    ngx_uint_t                                  i;
    ngx_stream_handler_pt                      *h;
    ngx_stream_core_main_conf_t                *cmcf;
    ngx_stream_upstream_srv_conf_t            **uscfp;
    ngx_stream_upstream_main_conf_t            *umcf;
    ngx_stream_amesh_original_dst_upstream_t   *u;
    ngx_stream_amesh_original_dst_main_conf_t  *amcf;

    cmcf = ngx_stream_conf_get_module_main_conf(cf, ngx_stream_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_STREAM_POST_ACCEPT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_stream_amesh_original_dst_local_handler;

    amcf = ngx_stream_conf_get_module_main_conf(cf,
                                                ngx_stream_amesh_original_dst_module);

    amcf->proxy_protocol_index = ngx_stream_get_variable_index(cf,
                                     &ngx_stream_amesh_upstream_proxy_protocol);
    if (amcf->proxy_protocol_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    /*
     * Every upstream, whatever its balancer (round robin, hash, balancer_by_lua), has its
     * peer.init by now (the upstream module's init main conf); this module's wraps it to
     * wrap the session's peer.get. An upstream that `proxy_pass $variable` makes at run
     * time from an address is not among them.
     */
    umcf = ngx_stream_conf_get_module_main_conf(cf, ngx_stream_upstream_module);

    uscfp = umcf->upstreams.elts;
    for (i = 0; i < umcf->upstreams.nelts; i++) {
        if (uscfp[i]->peer.init == NULL) {
            continue;
        }

        u = ngx_array_push(&amcf->upstreams);
        if (u == NULL) {
            return NGX_ERROR;
        }

        u->upstream = uscfp[i];
        u->init = uscfp[i]->peer.init;
        uscfp[i]->peer.init = ngx_stream_amesh_original_dst_init_peer;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_stream_amesh_original_dst_variable(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                            *str;
    ngx_stream_amesh_original_dst_ctx_t  *ctx;

    ctx = ngx_stream_amesh_original_dst_ctx(s, 1);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (ctx->dst.port.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    str = (ngx_str_t *) ((char *) &ctx->dst + data);

    v->len = str->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = str->data;

    return NGX_OK;
}


static ngx_int_t
ngx_stream_amesh_listen_port_variable(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    in_port_t  port;

    port = ngx_inet_get_port(s->connection->listening->sockaddr);
    if (port == 0) {
        /* a unix socket */
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ngx_pnalloc(s->connection->pool, sizeof("65535") - 1);
    if (v->data == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(v->data, "%ui", (ngx_uint_t) port) - v->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_stream_amesh_unset_variable(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    v->not_found = 1;
    return NGX_OK;
}


#if (NGX_STREAM_SSL)

/*
 * The TLS peer, read at the first read of any of its variables: the preread and later
 * phases run after the ssl phase's handshake.
 */
static ngx_int_t
ngx_stream_amesh_tls_peer_variable(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    ngx_stream_amesh_original_dst_ctx_t  *ctx;

    ctx = ngx_stream_amesh_original_dst_ctx(s, 0);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (!ctx->tls_peer_read) {
        if (ngx_amesh_tls_peer_read(s->connection, &ctx->tls_peer) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->tls_peer_read = 1;
    }

    ngx_amesh_tls_peer_value(&ctx->tls_peer, v, data);

    return NGX_OK;
}

#endif
