/*
 * Licensed under the Apache License, Version 2.0.
 *
 * http variables with the downstream TLS peer as Envoy's connection sees it, for
 * amesh's RBAC (the authenticated principal) and x-forwarded-client-cert: the
 * variables of ngx_amesh_tls_peer.h ($amesh_peer_verified, $amesh_peer_uri_sans,
 * $amesh_peer_dns_sans, $amesh_peer_subject, $amesh_peer_cert_sha256,
 * $amesh_local_uri_sans).
 *
 * The values are read once per client connection, at the first read of any of them,
 * and kept in the connection's pool: keepalive requests and HTTP/2 streams share them.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_amesh_tls_peer.h"

#if (NGX_HTTP_SSL)

#include "ngx_amesh_tls_peer.h"


static ngx_int_t ngx_http_amesh_tls_peer_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_amesh_tls_peer_cleanup(void *data);


static ngx_http_variable_t  ngx_http_amesh_tls_peer_vars[] = {

    NGX_AMESH_TLS_PEER_VARIABLES(ngx_http_amesh_tls_peer_variable),

      ngx_http_null_variable
};


ngx_int_t
ngx_http_amesh_tls_peer_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_amesh_tls_peer_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* The connection's values, found among its pool's cleanups by the handler that marks them. */
static ngx_amesh_tls_peer_t *
ngx_http_amesh_tls_peer_get(ngx_http_request_t *r)
{
    ngx_connection_t    *c;
    ngx_pool_cleanup_t  *cln;

    c = ngx_http_amesh_socket_connection(r);

    for (cln = c->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_amesh_tls_peer_cleanup) {
            return cln->data;
        }
    }

    cln = ngx_pool_cleanup_add(c->pool, sizeof(ngx_amesh_tls_peer_t));
    if (cln == NULL) {
        return NULL;
    }

    ngx_memzero(cln->data, sizeof(ngx_amesh_tls_peer_t));

    if (ngx_amesh_tls_peer_read(c, cln->data) != NGX_OK) {
        /* a cleanup without a handler is skipped when the pool is destroyed */
        return NULL;
    }

    cln->handler = ngx_http_amesh_tls_peer_cleanup;

    return cln->data;
}


static ngx_int_t
ngx_http_amesh_tls_peer_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_amesh_tls_peer_t  *tp;

    tp = ngx_http_amesh_tls_peer_get(r);
    if (tp == NULL) {
        return NGX_ERROR;
    }

    ngx_amesh_tls_peer_value(tp, v, data);

    return NGX_OK;
}


static void
ngx_http_amesh_tls_peer_cleanup(void *data)
{
    /* nothing to free: the strings live in the same pool; the handler marks the entry */
}


#else


ngx_int_t
ngx_http_amesh_tls_peer_add_variables(ngx_conf_t *cf)
{
    /* without the http ssl module no connection has a TLS peer */
    return NGX_OK;
}


#endif
