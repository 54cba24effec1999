/*
 * Licensed under the Apache License, Version 2.0.
 *
 * The downstream TLS peer of a connection as Envoy's connection sees it (its
 * Ssl::ConnectionInfo), shared by the http module (ngx_http_amesh_tls_peer.c) and the
 * stream module (ngx_stream_amesh_original_dst_module.c), which expose it as the same
 * variables:
 *
 *   $amesh_peer_verified     "1": TLS, and the client's certificate verified
 *                            ($ssl_client_verify SUCCESS); "0": TLS without one;
 *                            not found on a plaintext connection
 *   $amesh_peer_uri_sans     the peer certificate's URI SANs, in certificate order,
 *                            joined with "," (uriSanPeerCertificate)
 *   $amesh_peer_dns_sans     its DNS SANs, the same way (dnsSansPeerCertificate)
 *   $amesh_peer_subject      its subject in RFC 2253 form (subjectPeerCertificate)
 *   $amesh_peer_cert_sha256  SHA-256 of its DER, lower-case hex (XFCC's Hash)
 *   $amesh_local_uri_sans    the URI SANs of the certificate this server presented,
 *                            joined with "," (uriSanLocalCertificate, XFCC's By)
 *
 * The peer's values are empty unless $amesh_peer_verified is "1": an unverified
 * certificate names nobody (Envoy fails such a handshake; nginx's ssl_verify_client
 * optional* lets it through). In a SAN, "%", "," and bytes outside "!".."~" are
 * percent-encoded (%XX), so the list splits exactly; SPIFFE IDs and DNS names have
 * none of them. A TLS session carries its peer certificate and verification result, so
 * a resumed session gives the same values as a full handshake.
 *
 * Static functions in a header, as ngx_amesh_original_dst.h: each module stays
 * self-contained in dynamic and static builds alike.
 */

#ifndef _NGX_AMESH_TLS_PEER_H_INCLUDED_
#define _NGX_AMESH_TLS_PEER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#if (NGX_SSL)

#include <openssl/evp.h>
#include <openssl/x509v3.h>


typedef struct {
    ngx_str_t   verified;       /* "1", "0"; len 0 on plaintext */
    ngx_str_t   uri_sans;
    ngx_str_t   dns_sans;
    ngx_str_t   subject;
    ngx_str_t   sha256;
    ngx_str_t   local_uri_sans;
} ngx_amesh_tls_peer_t;


/*
 * The variables' entries in an ngx_http_variable_t or ngx_stream_variable_t array (the
 * same fields in the same order), each with handler as its get handler and the offset
 * of its field in ngx_amesh_tls_peer_t as its data.
 */
#define ngx_amesh_tls_peer_var(name, field, handler)                              \
    { ngx_string(name), NULL, handler,                                            \
      offsetof(ngx_amesh_tls_peer_t, field), 0, 0 }

#define NGX_AMESH_TLS_PEER_VARIABLES(handler)                                     \
    ngx_amesh_tls_peer_var("amesh_peer_verified", verified, handler),             \
    ngx_amesh_tls_peer_var("amesh_peer_uri_sans", uri_sans, handler),             \
    ngx_amesh_tls_peer_var("amesh_peer_dns_sans", dns_sans, handler),             \
    ngx_amesh_tls_peer_var("amesh_peer_subject", subject, handler),               \
    ngx_amesh_tls_peer_var("amesh_peer_cert_sha256", sha256, handler),            \
    ngx_amesh_tls_peer_var("amesh_local_uri_sans", local_uri_sans, handler)


static ngx_uint_t
ngx_amesh_san_plain(u_char ch)
{
    return ch > 0x20 && ch < 0x7f && ch != '%' && ch != ',';
}


/*
 * The SANs of type (GEN_URI, GEN_DNS) of cert, joined with ",", each percent-encoded
 * where ngx_amesh_san_plain says.
 */
static ngx_int_t
ngx_amesh_sans(ngx_pool_t *pool, X509 *cert, int type, ngx_str_t *out)
{
    int                     i, n;
    size_t                  len, k, j, vlen;
    u_char                 *p;
    const u_char           *val;
    GENERAL_NAME           *gn;
    GENERAL_NAMES          *names;
    static const u_char     hex[] = "0123456789ABCDEF";

    ngx_str_null(out);

    if (cert == NULL) {
        return NGX_OK;
    }

    names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) {
        return NGX_OK;
    }

    n = sk_GENERAL_NAME_num(names);

    /* two passes: the length, then the text */
    len = 0;
    p = NULL;

    for ( ;; ) {
        k = 0;

        for (i = 0; i < n; i++) {
            gn = sk_GENERAL_NAME_value(names, i);
            if (gn->type != type) {
                continue;
            }

            /* GEN_URI and GEN_DNS are both IA5Strings */
            val = ASN1_STRING_get0_data(gn->d.ia5);
            vlen = (size_t) ASN1_STRING_length(gn->d.ia5);

            if (k) {
                if (p) {
                    *p++ = ',';
                }
                len += (p == NULL);
            }
            k++;

            for (j = 0; j < vlen; j++) {
                if (ngx_amesh_san_plain(val[j])) {
                    if (p) {
                        *p++ = val[j];
                    }
                    len += (p == NULL);

                } else {
                    if (p) {
                        *p++ = '%';
                        *p++ = hex[val[j] >> 4];
                        *p++ = hex[val[j] & 0xf];
                    }
                    len += (p == NULL) * 3;
                }
            }
        }

        if (p || len == 0) {
            break;
        }

        p = ngx_pnalloc(pool, len);
        if (p == NULL) {
            GENERAL_NAMES_free(names);
            return NGX_ERROR;
        }

        out->data = p;
        out->len = len;
    }

    GENERAL_NAMES_free(names);

    return NGX_OK;
}


static ngx_int_t
ngx_amesh_cert_sha256(ngx_pool_t *pool, X509 *cert, ngx_str_t *out)
{
    u_char        *p;
    unsigned int   n;
    u_char         md[EVP_MAX_MD_SIZE];

    if (!X509_digest(cert, EVP_sha256(), md, &n)) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(pool, 2 * n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->len = ngx_hex_dump(p, md, n) - p;
    out->data = p;

    return NGX_OK;
}


/*
 * Reads the peer of connection c (its pool holds the strings); tp stays zero on a
 * plaintext connection.
 */
static ngx_int_t
ngx_amesh_tls_peer_read(ngx_connection_t *c, ngx_amesh_tls_peer_t *tp)
{
    X509       *cert;
    ngx_str_t   verify;
    ngx_int_t   rc;

    if (c->ssl == NULL) {
        return NGX_OK;
    }

    /* what the server presented: APISIX's ssl phase sets it per connection */
    if (ngx_amesh_sans(c->pool, SSL_get_certificate(c->ssl->connection), GEN_URI,
                            &tp->local_uri_sans)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* SUCCESS only for a certificate that was presented and verified */
    if (ngx_ssl_get_client_verify(c, c->pool, &verify) != NGX_OK) {
        return NGX_ERROR;
    }

    if (verify.len != sizeof("SUCCESS") - 1
        || ngx_strncmp(verify.data, "SUCCESS", verify.len) != 0)
    {
        ngx_str_set(&tp->verified, "0");
        return NGX_OK;
    }

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    cert = SSL_get1_peer_certificate(c->ssl->connection);
#else
    cert = SSL_get_peer_certificate(c->ssl->connection);
#endif
    if (cert == NULL) {
        ngx_str_set(&tp->verified, "0");
        return NGX_OK;
    }

    rc = ngx_amesh_sans(c->pool, cert, GEN_URI, &tp->uri_sans);

    if (rc == NGX_OK) {
        rc = ngx_amesh_sans(c->pool, cert, GEN_DNS, &tp->dns_sans);
    }

    if (rc == NGX_OK) {
        rc = ngx_amesh_cert_sha256(c->pool, cert, &tp->sha256);
    }

    X509_free(cert);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    /* X509_NAME_print_ex with XN_FLAG_RFC2253, as Envoy's subjectPeerCertificate */
    if (ngx_ssl_get_subject_dn(c, c->pool, &tp->subject) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_str_set(&tp->verified, "1");

    ngx_log_debug2(NGX_LOG_DEBUG_CORE, c->log, 0,
                   "amesh tls peer: uri sans \"%V\", sha256 %V",
                   &tp->uri_sans, &tp->sha256);

    return NGX_OK;
}


/*
 * The value of the variable at offset data of tp: not found on a plaintext connection
 * (tp NULL or without a verification result).
 */
static ngx_inline void
ngx_amesh_tls_peer_value(ngx_amesh_tls_peer_t *tp, ngx_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t  *s;

    if (tp == NULL || tp->verified.len == 0) {
        v->not_found = 1;
        return;
    }

    s = (ngx_str_t *) ((char *) tp + data);

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = s->data;
}

#endif /* NGX_SSL */

#endif /* _NGX_AMESH_TLS_PEER_H_INCLUDED_ */
