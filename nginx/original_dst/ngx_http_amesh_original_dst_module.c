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
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_amesh_original_dst.h"


static ngx_int_t ngx_http_amesh_original_dst_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_amesh_original_dst_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_amesh_original_dst_cleanup(void *data);


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
    NULL,                                       /* postconfiguration */

    NULL,                                       /* create main configuration */
    NULL,                                       /* init main configuration */

    NULL,                                       /* create server configuration */
    NULL,                                       /* merge server configuration */

    NULL,                                       /* create location configuration */
    NULL                                        /* merge location configuration */
};


ngx_module_t  ngx_http_amesh_original_dst_module = {
    NGX_MODULE_V1,
    &ngx_http_amesh_original_dst_module_ctx,    /* module context */
    NULL,                                       /* module directives */
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
    ngx_connection_t    *c;
    ngx_pool_cleanup_t  *cln;

    c = r->connection;

#if (NGX_HTTP_V2)
    if (r->stream) {
        /* each HTTP/2 stream has a connection of its own; the socket's is the session's */
        c = r->stream->connection->connection;
    }
#endif

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

    rc = ngx_amesh_original_dst_resolve(c, c->pool, cln->data);
    if (rc == NGX_ERROR) {
        /* a cleanup without a handler is skipped when the pool is destroyed */
        return NULL;
    }

    /* NGX_DECLINED (a unix socket) is kept too, as empty strings */
    cln->handler = ngx_http_amesh_original_dst_cleanup;

    return cln->data;
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
