/*
 * Licensed under the Apache License, Version 2.0.
 *
 * What the http module's sources share: the original destination and the capture
 * listener (ngx_http_amesh_original_dst_module.c), the TLS peer (ngx_http_amesh_tls_peer.c),
 * the ALPN selection (ngx_http_amesh_ssl_alpn.c).
 */

#ifndef NGX_HTTP_AMESH_TLS_PEER_H
#define NGX_HTTP_AMESH_TLS_PEER_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* The module's server configuration (ngx_http_amesh_original_dst_module.c). */
typedef struct {
    ngx_flag_t  ssl_alpn_optional;    /* amesh_ssl_alpn_optional */
} ngx_http_amesh_original_dst_srv_conf_t;


extern ngx_module_t  ngx_http_amesh_original_dst_module;


/* The connection of the client's socket: each HTTP/2 stream has a copy of its own. */
ngx_connection_t *ngx_http_amesh_socket_connection(ngx_http_request_t *r);

/* Declares $amesh_peer_* and $amesh_local_uri_sans (preconfiguration). */
ngx_int_t ngx_http_amesh_tls_peer_add_variables(ngx_conf_t *cf);

/* Sets the ALPN selection of servers with amesh_ssl_alpn_optional on (postconfiguration). */
ngx_int_t ngx_http_amesh_ssl_alpn_init(ngx_conf_t *cf);

#endif /* NGX_HTTP_AMESH_TLS_PEER_H */
