/*
 * Licensed under the Apache License, Version 2.0.
 *
 *   amesh_ssl_alpn_optional on | off;   (http, server; default off)
 *
 * makes the TLS handshakes of a server select the application protocol as Envoy does: the
 * protocol nginx would select (h2 when the connection has HTTP/2, then http/1.1, http/1.0,
 * http/0.9), and, when the client offers none of them, no protocol at all: the handshake
 * goes on without ALPN and the connection speaks HTTP/1.x. nginx's own selection ends such
 * a handshake with a fatal no_application_protocol alert.
 *
 * Why: an Istio peer whose sidecar treats a port as TCP offers only "istio-peer-exchange"
 * and "istio" in ALPN. istiod's inbound chain for an HTTP port accepts those and runs an
 * HTTP connection manager, whose TLS context offers h2 and http/1.1; Envoy's ALPN callback
 * (ServerContextImpl::alpnSelectCallback) answers SSL_TLSEXT_ERR_NOACK when the lists do
 * not meet, and the peer's HTTP/1.1 is served. nginx in Envoy's place must do the same.
 *
 * nginx sets its callback on a server's SSL_CTX when it merges the server's configuration;
 * this module replaces it in postconfiguration, which runs after all servers are merged.
 * nginx's callback is static, so its choice is replicated here for the nginx versions amesh
 * builds for (1.22: HTTP/2 is `listen ... http2`; since 1.25.1 also `http2 on`).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <nginx.h>

#include "ngx_http_amesh_tls_peer.h"


#if (NGX_HTTP_SSL && defined TLSEXT_TYPE_application_layer_protocol_negotiation)

/* nginx's list for HTTP/1.x (NGX_HTTP_ALPN_PROTOS in ngx_http_ssl_module.c, 1.22 to 1.29) */
#define NGX_HTTP_AMESH_ALPN_PROTOS  "\x08http/1.1\x08http/1.0\x08http/0.9"


static int ngx_http_amesh_ssl_alpn_select(ngx_ssl_conn_t *ssl_conn,
    const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg);
#if (NGX_HTTP_V2)
static ngx_uint_t ngx_http_amesh_ssl_alpn_h2(ngx_connection_t *c);
#endif
#if (nginx_version >= 1025000)
static ngx_int_t ngx_http_amesh_ssl_alpn_check_quic(ngx_conf_t *cf,
    ngx_http_core_main_conf_t *cmcf);
#endif


ngx_int_t
ngx_http_amesh_ssl_alpn_init(ngx_conf_t *cf)
{
    ngx_uint_t                                s;
    ngx_http_ssl_srv_conf_t                  *sscf;
    ngx_http_core_srv_conf_t                **cscfp;
    ngx_http_core_main_conf_t                *cmcf;
    ngx_http_amesh_original_dst_srv_conf_t   *ascf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

#if (nginx_version >= 1025000)
    if (ngx_http_amesh_ssl_alpn_check_quic(cf, cmcf) != NGX_OK) {
        return NGX_ERROR;
    }
#endif

    cscfp = cmcf->servers.elts;

    for (s = 0; s < cmcf->servers.nelts; s++) {

        ascf = cscfp[s]->ctx->srv_conf[ngx_http_amesh_original_dst_module.ctx_index];

        if (!ascf->ssl_alpn_optional) {
            continue;
        }

        sscf = cscfp[s]->ctx->srv_conf[ngx_http_ssl_module.ctx_index];

        /*
         * A server without certificates has no SSL_CTX: no handshake runs on one of its
         * own (a handshake SNI sends to it keeps the address's default server's), so
         * there is nothing to change. Accepted, so that the directive can be set for
         * all servers at the http level.
         */
        if (sscf->ssl.ctx == NULL) {
            continue;
        }

        SSL_CTX_set_alpn_select_cb(sscf->ssl.ctx, ngx_http_amesh_ssl_alpn_select,
                                   NULL);
    }

    return NGX_OK;
}


/*
 * nginx's ngx_http_ssl_alpn_select for TCP, but without a common protocol the handshake
 * goes on without ALPN, as in Envoy.
 */
static int
ngx_http_amesh_ssl_alpn_select(ngx_ssl_conn_t *ssl_conn,
    const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned int       srvlen;
    unsigned char     *srv;
#if (NGX_DEBUG)
    unsigned int       i;
#endif
#if (NGX_HTTP_V2 || NGX_DEBUG)
    ngx_connection_t  *c;

    c = ngx_ssl_get_connection(ssl_conn);
#endif

#if (NGX_DEBUG)
    for (i = 0; i < inlen; i += in[i] + 1) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "SSL ALPN supported by client: %*s",
                       (size_t) in[i], &in[i + 1]);
    }
#endif

#if (NGX_HTTP_V2)
    if (ngx_http_amesh_ssl_alpn_h2(c)) {
        srv = (unsigned char *) NGX_HTTP_V2_ALPN_PROTO NGX_HTTP_AMESH_ALPN_PROTOS;
        srvlen = sizeof(NGX_HTTP_V2_ALPN_PROTO NGX_HTTP_AMESH_ALPN_PROTOS) - 1;

    } else
#endif
    {
        srv = (unsigned char *) NGX_HTTP_AMESH_ALPN_PROTOS;
        srvlen = sizeof(NGX_HTTP_AMESH_ALPN_PROTOS) - 1;
    }

    if (SSL_select_next_proto((unsigned char **) out, outlen, srv, srvlen,
                              in, inlen)
        != OPENSSL_NPN_NEGOTIATED)
    {
        /* Envoy's answer: no protocol, and the connection is HTTP/1.x */
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "amesh ssl alpn: no protocol in common, none selected");

        return SSL_TLSEXT_ERR_NOACK;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "SSL ALPN selected: %*s", (size_t) *outlen, *out);

    return SSL_TLSEXT_ERR_OK;
}


#if (NGX_HTTP_V2)

/*
 * Whether nginx offers h2 on the connection: `listen ... http2` of its address, or since
 * 1.25.1 `http2 on` in the server the handshake is for (hc->conf_ctx, which the SNI
 * callback has already set to the server named).
 */
static ngx_uint_t
ngx_http_amesh_ssl_alpn_h2(ngx_connection_t *c)
{
    ngx_http_connection_t   *hc;
#if (nginx_version >= 1025001)
    ngx_http_v2_srv_conf_t  *h2scf;
#endif

    hc = c->data;

#if (nginx_version >= 1025001)
    h2scf = ngx_http_get_module_srv_conf(hc->conf_ctx, ngx_http_v2_module);

    if (h2scf->enable) {
        return 1;
    }
#endif

    return hc->addr_conf->http2;
}

#endif


#if (nginx_version >= 1025000)

/*
 * A server's SSL_CTX serves its `listen ... quic` too, where nginx selects h3 or hq-interop
 * by ngx_http_v3_module's settings, which this module does not replicate; and QUIC cannot
 * go on without ALPN anyway (RFC 9001, 8.1). So a server with the directive on must not
 * listen on QUIC.
 */
static ngx_int_t
ngx_http_amesh_ssl_alpn_check_quic(ngx_conf_t *cf,
    ngx_http_core_main_conf_t *cmcf)
{
    ngx_uint_t                                p, a, s;
    ngx_http_conf_addr_t                     *addr;
    ngx_http_conf_port_t                     *port;
    ngx_http_core_srv_conf_t                **cscfp;
    ngx_http_amesh_original_dst_srv_conf_t   *ascf;

    if (cmcf->ports == NULL) {
        return NGX_OK;
    }

    port = cmcf->ports->elts;
    for (p = 0; p < cmcf->ports->nelts; p++) {

        addr = port[p].addrs.elts;
        for (a = 0; a < port[p].addrs.nelts; a++) {

            if (!addr[a].opt.quic) {
                continue;
            }

            cscfp = addr[a].servers.elts;
            for (s = 0; s < addr[a].servers.nelts; s++) {

                ascf = cscfp[s]->ctx->srv_conf[
                           ngx_http_amesh_original_dst_module.ctx_index];

                if (ascf->ssl_alpn_optional) {
                    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                                  "\"amesh_ssl_alpn_optional\" is not for "
                                  "the \"listen ... quic\" directive in %s:%ui",
                                  cscfp[s]->file_name, cscfp[s]->line);
                    return NGX_ERROR;
                }
            }
        }
    }

    return NGX_OK;
}

#endif


#else


ngx_int_t
ngx_http_amesh_ssl_alpn_init(ngx_conf_t *cf)
{
    /* without the http ssl module (or ALPN in OpenSSL) nginx selects no protocol either */
    return NGX_OK;
}


#endif
