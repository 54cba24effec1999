/*
 * Licensed under the Apache License, Version 2.0.
 *
 * Upstream TLS profiles, shared by the http and the stream module of nginx/upstream_tls
 * (README.md): what Envoy's UpstreamTlsContext sets per cluster (SNI, ALPN, client
 * certificate and key, trusted roots and CRLs, expected subject alt names, protocol
 * versions, ciphers, curves), made once from Lua through LuaJIT's FFI
 * (amesh_upstream_tls_profile_new) and applied to each new upstream TLS connection that
 * uses it (ngx_amesh_tls_apply), with Envoy's certificate checks (ngx_amesh_tls_verify).
 * The same checks apply to a downstream connection's client certificate in its
 * handshake (amesh_tls_verify_client), as Envoy's inbound listener applies them.
 *
 * The functions are static: each module is self-contained, in dynamic and static builds.
 * Only the FFI entry points defined here are global; when both modules are loaded,
 * LuaJIT finds one copy of them, and a profile made by either is the same structure for
 * both.
 */

#ifndef NGX_AMESH_UPSTREAM_TLS_H
#define NGX_AMESH_UPSTREAM_TLS_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#if !(NGX_SSL)
#error nginx/upstream_tls needs nginx with SSL
#endif

#include <arpa/inet.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Subject alt name matchers (see ngx_amesh_tls_san_match). */
#define AMESH_SAN_DNS       0x01
#define AMESH_SAN_URI       0x02
#define AMESH_SAN_EMAIL     0x04
#define AMESH_SAN_IP        0x08

#define AMESH_MATCH_EXACT     0
#define AMESH_MATCH_PREFIX    1
#define AMESH_MATCH_SUFFIX    2
#define AMESH_MATCH_CONTAINS  3

/* Profile flags (amesh_upstream_tls_profile_new). */
#define AMESH_TLS_AUTO_SNI        0x01
#define AMESH_TLS_AUTO_SAN        0x02
#define AMESH_TLS_VERIFY          0x04
#define AMESH_TLS_CRL_LEAF_ONLY   0x08


typedef struct {
    u_char      types;
    u_char      kind;
    u_char      icase;
    size_t      len;
    u_char     *value;
} ngx_amesh_tls_san_t;


typedef struct {
    ngx_uint_t              refs;

    ngx_str_t               sni;
    unsigned                auto_sni:1;
    unsigned                auto_san:1;

    u_char                 *alpn;
    size_t                  alpn_len;

    X509                   *cert;
    STACK_OF(X509)         *chain;       /* intermediates sent after cert */
    EVP_PKEY               *pkey;

    X509_STORE             *store;       /* NULL: the chain is not verified */

    ngx_uint_t              nsans;
    ngx_amesh_tls_san_t    *sans;

    int                     min_version;
    int                     max_version;
    char                   *ciphers;
    char                   *curves;
} ngx_amesh_tls_profile_t;


/* What the verify callback needs, in the connection's pool. */
typedef struct {
    ngx_amesh_tls_profile_t       *profile;
    ngx_str_t                      sni;
    /* the peer is a client: its chain is verified against the connection's roots
     * when the profile has none */
    unsigned                       downstream:1;
} ngx_amesh_tls_conn_t;


/* The index of a connection's ngx_amesh_tls_conn_t among its SSL object's ex data. */
static int  ngx_amesh_tls_conn_index = -1;


/*
 * Once per process: the index outlives reloads (the module stays mapped while a cycle
 * uses it), and it has no free callback, which would be called for every SSL object of
 * the process.
 */
static ngx_int_t
ngx_amesh_tls_init_index(ngx_log_t *log)
{
    if (ngx_amesh_tls_conn_index == -1) {
        ngx_amesh_tls_conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        if (ngx_amesh_tls_conn_index == -1) {
            ngx_ssl_error(NGX_LOG_EMERG, log, 0,
                          "amesh upstream tls: SSL_get_ex_new_index() failed");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* ---- profiles ---- */

static void
ngx_amesh_tls_err(char *err, size_t err_len, const char *msg)
{
    unsigned long  e;
    u_char        *p, *last;

    if (err == NULL || err_len == 0) {
        ERR_clear_error();
        return;
    }

    last = (u_char *) err + err_len - 1;
    p = ngx_cpystrn((u_char *) err, (u_char *) msg, err_len);

    e = ERR_peek_last_error();
    if (e != 0 && p < last) {
        p = ngx_slprintf(p, last, ": %s", ERR_reason_error_string(e));
    }

    *p = '\0';
    ERR_clear_error();
}


static char *
ngx_amesh_tls_strdup(const char *s)
{
    size_t   n;
    char    *d;

    n = ngx_strlen(s) + 1;
    d = ngx_alloc(n, ngx_cycle->log);
    if (d != NULL) {
        ngx_memcpy(d, s, n);
    }

    return d;
}


static void
ngx_amesh_tls_profile_destroy(ngx_amesh_tls_profile_t *p)
{
    ngx_uint_t  i;

    if (p->cert) {
        X509_free(p->cert);
    }

    if (p->chain) {
        sk_X509_pop_free(p->chain, X509_free);
    }

    if (p->pkey) {
        EVP_PKEY_free(p->pkey);
    }

    if (p->store) {
        X509_STORE_free(p->store);
    }

    if (p->sans) {
        for (i = 0; i < p->nsans; i++) {
            ngx_free(p->sans[i].value);
        }

        ngx_free(p->sans);
    }

    ngx_free(p->sni.data);
    ngx_free(p->alpn);
    ngx_free(p->ciphers);
    ngx_free(p->curves);
    ngx_free(p);
}


static void
ngx_amesh_tls_profile_unref(ngx_amesh_tls_profile_t *p)
{
    if (p != NULL && --p->refs == 0) {
        ngx_amesh_tls_profile_destroy(p);
    }
}


/*
 * Subject alt name matchers arrive as records of
 * [types:1][kind:1][ignore_case:1][length:2, big endian][value].
 */
static ngx_int_t
ngx_amesh_tls_parse_sans(ngx_amesh_tls_profile_t *p, const u_char *b,
    size_t len)
{
    size_t                 n, off;
    ngx_uint_t             count, i;
    ngx_amesh_tls_san_t  *s;

    count = 0;
    for (off = 0; off < len; off += 5 + n) {
        if (len - off < 5) {
            return NGX_ERROR;
        }

        n = ((size_t) b[off + 3] << 8) | b[off + 4];
        if (len - off - 5 < n || b[off + 1] > AMESH_MATCH_CONTAINS
            || (b[off] & 0x0f) == 0 || (b[off] & ~0x0f) != 0)
        {
            return NGX_ERROR;
        }

        count++;
    }

    if (count == 0) {
        return NGX_OK;
    }

    p->sans = ngx_calloc(count * sizeof(ngx_amesh_tls_san_t), ngx_cycle->log);
    if (p->sans == NULL) {
        return NGX_ERROR;
    }

    for (off = 0, i = 0; i < count; i++, off += 5 + n) {
        s = &p->sans[i];
        n = ((size_t) b[off + 3] << 8) | b[off + 4];

        s->types = b[off];
        s->kind = b[off + 1];
        s->icase = b[off + 2] != 0;
        s->len = n;
        s->value = ngx_alloc(n + 1, ngx_cycle->log);
        if (s->value == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(s->value, b + off + 5, n);
        s->value[n] = '\0';
        p->nsans = i + 1;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_amesh_tls_add_crls(X509_STORE *store, const u_char *pem, size_t len)
{
    BIO           *bio;
    X509_CRL      *crl;
    ngx_uint_t     n;
    unsigned long  e;

    bio = BIO_new_mem_buf((void *) pem, (int) len);
    if (bio == NULL) {
        return NGX_ERROR;
    }

    for (n = 0; /* void */; n++) {
        crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
        if (crl == NULL) {
            break;
        }

        if (X509_STORE_add_crl(store, crl) != 1) {
            X509_CRL_free(crl);
            BIO_free(bio);
            return NGX_ERROR;
        }

        X509_CRL_free(crl);
    }

    BIO_free(bio);

    /* the end of the input, not a broken CRL */
    e = ERR_peek_last_error();
    if (n == 0 || (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM
                               && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)))
    {
        return NGX_ERROR;
    }

    ERR_clear_error();
    return NGX_OK;
}


/*
 * Makes a profile with one reference, or NULL with the reason in err. cert_chain and
 * ca_chain are STACK_OF(X509) and pkey an EVP_PKEY, as lua-resty-core's
 * ngx.ssl.parse_pem_cert and parse_pem_priv_key return them; the profile takes
 * references of its own. alpn is in wire format (length-prefixed names).
 */
void *
amesh_upstream_tls_profile_new(const u_char *sni, size_t sni_len, int flags,
    const u_char *alpn, size_t alpn_len, void *cert_chain, void *pkey,
    void *ca_chain, const u_char *crl, size_t crl_len, const u_char *sans,
    size_t sans_len, int min_version, int max_version, const char *ciphers,
    const char *curves, char *err, size_t err_len)
{
    int                            i, n;
    X509                          *x;
    STACK_OF(X509)                *certs, *cas;
    ngx_amesh_tls_profile_t  *p;

    p = ngx_calloc(sizeof(ngx_amesh_tls_profile_t), ngx_cycle->log);
    if (p == NULL) {
        ngx_amesh_tls_err(err, err_len, "no memory");
        return NULL;
    }

    p->refs = 1;
    p->auto_sni = (flags & AMESH_TLS_AUTO_SNI) != 0;
    p->auto_san = (flags & AMESH_TLS_AUTO_SAN) != 0;
    p->min_version = min_version;
    p->max_version = max_version;

    if (sni_len) {
        p->sni.data = ngx_alloc(sni_len + 1, ngx_cycle->log);
        if (p->sni.data == NULL) {
            goto nomem;
        }

        ngx_memcpy(p->sni.data, sni, sni_len);
        p->sni.data[sni_len] = '\0';
        p->sni.len = sni_len;
    }

    if (alpn_len) {
        p->alpn = ngx_alloc(alpn_len, ngx_cycle->log);
        if (p->alpn == NULL) {
            goto nomem;
        }

        ngx_memcpy(p->alpn, alpn, alpn_len);
        p->alpn_len = alpn_len;
    }

    if (cert_chain != NULL || pkey != NULL) {
        certs = cert_chain;
        if (certs == NULL || pkey == NULL || sk_X509_num(certs) < 1) {
            ngx_amesh_tls_err(err, err_len,
                                   "a client certificate needs its private key");
            goto failed;
        }

        x = sk_X509_value(certs, 0);
        if (X509_check_private_key(x, pkey) != 1) {
            ngx_amesh_tls_err(err, err_len,
                        "the client certificate does not match its private key");
            goto failed;
        }

        if (X509_up_ref(x) != 1) {
            goto nomem;
        }
        p->cert = x;

        if (EVP_PKEY_up_ref(pkey) != 1) {
            goto nomem;
        }
        p->pkey = pkey;

        p->chain = sk_X509_new_null();
        if (p->chain == NULL) {
            goto nomem;
        }

        n = sk_X509_num(certs);
        for (i = 1; i < n; i++) {
            x = sk_X509_value(certs, i);
            if (X509_up_ref(x) != 1) {
                goto nomem;
            }

            if (sk_X509_push(p->chain, x) == 0) {
                X509_free(x);
                goto nomem;
            }
        }
    }

    if (flags & AMESH_TLS_VERIFY) {
        cas = ca_chain;
        if (cas == NULL || sk_X509_num(cas) < 1) {
            ngx_amesh_tls_err(err, err_len, "no trusted certificate");
            goto failed;
        }

        p->store = X509_STORE_new();
        if (p->store == NULL) {
            goto nomem;
        }

        n = sk_X509_num(cas);
        for (i = 0; i < n; i++) {
            if (X509_STORE_add_cert(p->store, sk_X509_value(cas, i)) != 1) {
                unsigned long e = ERR_peek_last_error();

                /* the same root twice in a bundle is not an error */
                if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                    ngx_amesh_tls_err(err, err_len,
                                           "cannot add a trusted certificate");
                    goto failed;
                }

                ERR_clear_error();
            }
        }

        if (crl_len) {
            if (ngx_amesh_tls_add_crls(p->store, crl, crl_len) != NGX_OK) {
                ngx_amesh_tls_err(err, err_len, "cannot read the CRLs");
                goto failed;
            }

            X509_STORE_set_flags(p->store, (flags & AMESH_TLS_CRL_LEAF_ONLY)
                                 ? X509_V_FLAG_CRL_CHECK
                                 : X509_V_FLAG_CRL_CHECK
                                   | X509_V_FLAG_CRL_CHECK_ALL);
        }

    } else if (crl_len) {
        ngx_amesh_tls_err(err, err_len, "CRLs without trusted certificates");
        goto failed;
    }

    if (sans_len && ngx_amesh_tls_parse_sans(p, sans, sans_len) != NGX_OK) {
        ngx_amesh_tls_err(err, err_len, "malformed subject alt name matchers");
        goto failed;
    }

    if (ciphers != NULL) {
        p->ciphers = ngx_amesh_tls_strdup(ciphers);
        if (p->ciphers == NULL) {
            goto nomem;
        }
    }

    if (curves != NULL) {
        p->curves = ngx_amesh_tls_strdup(curves);
        if (p->curves == NULL) {
            goto nomem;
        }
    }

    ERR_clear_error();
    return p;

nomem:

    ngx_amesh_tls_err(err, err_len, "no memory");

failed:

    ngx_amesh_tls_profile_destroy(p);
    return NULL;
}


void
amesh_upstream_tls_profile_free(void *p)
{
    ngx_amesh_tls_profile_unref(p);
}


/* ---- connections ---- */

static ngx_int_t
ngx_amesh_tls_ieq(const u_char *a, size_t alen, const u_char *b, size_t blen,
    ngx_uint_t icase)
{
    if (alen != blen) {
        return 0;
    }

    return icase ? ngx_strncasecmp((u_char *) a, (u_char *) b, alen) == 0
                 : ngx_memcmp(a, b, alen) == 0;
}


/* Envoy's DNS name match: equal ignoring case, or a "*." pattern standing for one
 * label. */
static ngx_int_t
ngx_amesh_tls_dns_match(const u_char *name, size_t nlen, const u_char *pattern,
    size_t plen)
{
    size_t  off;

    if (ngx_amesh_tls_ieq(name, nlen, pattern, plen, 1)) {
        return 1;
    }

    if (plen > 1 && pattern[0] == '*' && pattern[1] == '.' && nlen > plen - 1) {
        off = nlen - (plen - 1);
        if (ngx_strlchr((u_char *) name, (u_char *) name + off, '.') == NULL
            && ngx_strncasecmp((u_char *) name + off, (u_char *) pattern + 1,
                               plen - 1) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_amesh_tls_string_match(ngx_amesh_tls_san_t *m, const u_char *s, size_t len)
{
    size_t   i;

    switch (m->kind) {

    case AMESH_MATCH_EXACT:
        return ngx_amesh_tls_ieq(s, len, m->value, m->len, m->icase);

    case AMESH_MATCH_PREFIX:
        return len >= m->len
               && ngx_amesh_tls_ieq(s, m->len, m->value, m->len, m->icase);

    case AMESH_MATCH_SUFFIX:
        return len >= m->len
               && ngx_amesh_tls_ieq(s + len - m->len, m->len, m->value,
                                         m->len, m->icase);

    case AMESH_MATCH_CONTAINS:
        if (m->len == 0) {
            return 1;
        }

        for (i = 0; i + m->len <= len; i++) {
            if (ngx_amesh_tls_ieq(s + i, m->len, m->value, m->len, m->icase)) {
                return 1;
            }
        }

        return 0;
    }

    return 0;
}


/* Whether one of cert's subject alt names satisfies one of the profile's matchers. */
static ngx_int_t
ngx_amesh_tls_san_match(ngx_amesh_tls_profile_t *p, X509 *cert)
{
    int                     i, n;
    size_t                  len;
    u_char                  type, ip[NGX_INET6_ADDRSTRLEN + 1];
    ngx_uint_t              j, found;
    const u_char           *s;
    GENERAL_NAME           *gn;
    GENERAL_NAMES          *names;
    ngx_amesh_tls_san_t    *m;

    names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) {
        return 0;
    }

    found = 0;
    n = sk_GENERAL_NAME_num(names);

    for (i = 0; i < n && !found; i++) {
        gn = sk_GENERAL_NAME_value(names, i);

        switch (gn->type) {

        case GEN_DNS:
            type = AMESH_SAN_DNS;
            s = ASN1_STRING_get0_data(gn->d.dNSName);
            len = ASN1_STRING_length(gn->d.dNSName);
            break;

        case GEN_URI:
            type = AMESH_SAN_URI;
            s = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
            len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
            break;

        case GEN_EMAIL:
            type = AMESH_SAN_EMAIL;
            s = ASN1_STRING_get0_data(gn->d.rfc822Name);
            len = ASN1_STRING_length(gn->d.rfc822Name);
            break;

        case GEN_IPADD:
            type = AMESH_SAN_IP;
            len = ASN1_STRING_length(gn->d.iPAddress);
            if ((len != 4 && len != 16)
                || inet_ntop(len == 4 ? AF_INET : AF_INET6,
                             ASN1_STRING_get0_data(gn->d.iPAddress), (char *) ip,
                             sizeof(ip))
                   == NULL)
            {
                continue;
            }
            s = ip;
            len = ngx_strlen(ip);
            break;

        default:
            continue;
        }

        for (j = 0; j < p->nsans; j++) {
            m = &p->sans[j];
            if (!(m->types & type)) {
                continue;
            }

            if (type == AMESH_SAN_DNS && m->kind == AMESH_MATCH_EXACT
                ? ngx_amesh_tls_dns_match(m->value, m->len, s, len)
                : ngx_amesh_tls_string_match(m, s, len))
            {
                found = 1;
                break;
            }
        }
    }

    GENERAL_NAMES_free(names);
    return found;
}


static int
ngx_amesh_tls_verify(int ok, X509_STORE_CTX *x509_store)
{
    int                         depth;
    SSL                        *ssl;
    X509                       *cert;
    ngx_uint_t                  level;
    const char                 *side, *peer;
    ngx_connection_t           *c;
    ngx_amesh_tls_conn_t       *tc;

    ssl = X509_STORE_CTX_get_ex_data(x509_store,
                                     SSL_get_ex_data_X509_STORE_CTX_idx());
    tc = SSL_get_ex_data(ssl, ngx_amesh_tls_conn_index);
    c = ngx_ssl_get_connection(ssl);

    if (tc == NULL || c == NULL) {
        return 0;
    }

    /* a client's bad certificate is the client's problem, as nginx logs it */
    if (tc->downstream) {
        level = NGX_LOG_INFO;
        side = "downstream";
        peer = "client";

    } else {
        level = NGX_LOG_ERR;
        side = "upstream";
        peer = "upstream";
    }

    if (tc->profile->store == NULL && !tc->downstream) {
        /* no trusted certificates: Envoy checks only the names */
        ok = 1;
    }

    if (!ok) {
        ngx_log_error(level, c->log, 0,
                      "amesh %s tls: certificate verify error: (%d:%s) "
                      "at depth %d", side,
                      X509_STORE_CTX_get_error(x509_store),
                      X509_verify_cert_error_string(
                          X509_STORE_CTX_get_error(x509_store)),
                      X509_STORE_CTX_get_error_depth(x509_store));
        return 0;
    }

    depth = X509_STORE_CTX_get_error_depth(x509_store);
    if (depth != 0) {
        return 1;
    }

    cert = X509_STORE_CTX_get_current_cert(x509_store);

    if (tc->profile->nsans && !ngx_amesh_tls_san_match(tc->profile, cert)) {
        ngx_log_error(level, c->log, 0,
                      "amesh %s tls: the %s's certificate has none "
                      "of the expected subject alt names", side, peer);
        X509_STORE_CTX_set_error(x509_store, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }

    if (tc->profile->auto_san
        && (tc->sni.len == 0
            || X509_check_host(cert, (const char *) tc->sni.data, tc->sni.len,
                               X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL) != 1))
    {
        ngx_log_error(level, c->log, 0,
                      "amesh %s tls: the %s's certificate does not "
                      "match \"%V\"", side, peer, &tc->sni);
        X509_STORE_CTX_set_error(x509_store, X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
    }

    return 1;
}


static void
ngx_amesh_tls_conn_cleanup(void *data)
{
    ngx_amesh_tls_conn_t  *tc = data;

    ngx_amesh_tls_profile_unref(tc->profile);
    tc->profile = NULL;
}


/*
 * Applies p to the new upstream connection c, whose SNI will be sni. The caller keeps
 * the connection's TLS session from being resumed or saved.
 */
static ngx_int_t
ngx_amesh_tls_apply(ngx_connection_t *c,
    ngx_amesh_tls_profile_t *p, ngx_str_t *sni)
{
    SSL                        *ssl;
    u_char                     *q, *last;
    ngx_str_t                   host;
    ngx_pool_cleanup_t         *cln;
    ngx_amesh_tls_conn_t       *tc;

    ssl = c->ssl->connection;

    cln = ngx_pool_cleanup_add(c->pool, sizeof(ngx_amesh_tls_conn_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    tc = cln->data;
    tc->profile = p;
    tc->downstream = 0;
    p->refs++;
    cln->handler = ngx_amesh_tls_conn_cleanup;

    /* the name nginx sends: without a port (ngx_http_upstream_ssl_name,
     * ngx_stream_proxy_ssl_name) */
    host.data = sni->data;
    host.len = sni->len;
    last = host.data + host.len;
    q = host.data;
    if (host.len && *q == '[') {
        q = ngx_strlchr(q, last, ']');
        if (q == NULL) {
            q = host.data;
        }
    }
    q = ngx_strlchr(q, last, ':');
    if (q != NULL) {
        host.len = q - host.data;
    }

    tc->sni.len = host.len;
    tc->sni.data = ngx_pnalloc(c->pool, host.len + 1);
    if (tc->sni.data == NULL) {
        return NGX_ERROR;
    }
    ngx_memcpy(tc->sni.data, host.data, host.len);
    tc->sni.data[host.len] = '\0';

    if (SSL_set_ex_data(ssl, ngx_amesh_tls_conn_index, tc) != 1) {
        ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                      "amesh upstream tls: SSL_set_ex_data() failed");
        return NGX_ERROR;
    }

    if (p->alpn_len && SSL_set_alpn_protos(ssl, p->alpn, p->alpn_len) != 0) {
        ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                      "amesh upstream tls: SSL_set_alpn_protos() failed");
        return NGX_ERROR;
    }

    if (p->cert) {
        if (SSL_use_certificate(ssl, p->cert) != 1
            || SSL_use_PrivateKey(ssl, p->pkey) != 1
            || SSL_set1_chain(ssl, p->chain) != 1)
        {
            ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                          "amesh upstream tls: cannot set the client certificate");
            return NGX_ERROR;
        }
    }

    if (p->min_version && SSL_set_min_proto_version(ssl, p->min_version) != 1) {
        ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                      "amesh upstream tls: SSL_set_min_proto_version() failed");
        return NGX_ERROR;
    }

    if (p->max_version && SSL_set_max_proto_version(ssl, p->max_version) != 1) {
        ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                      "amesh upstream tls: SSL_set_max_proto_version() failed");
        return NGX_ERROR;
    }

    if (p->ciphers && SSL_set_cipher_list(ssl, p->ciphers) != 1) {
        ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                      "amesh upstream tls: SSL_set_cipher_list(\"%s\") failed",
                      p->ciphers);
        return NGX_ERROR;
    }

    if (p->curves && SSL_set1_curves_list(ssl, p->curves) != 1) {
        ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                      "amesh upstream tls: SSL_set1_curves_list(\"%s\") failed",
                      p->curves);
        return NGX_ERROR;
    }

    if (p->store) {
        if (SSL_set1_verify_cert_store(ssl, p->store) != 1) {
            ngx_ssl_error(NGX_LOG_ERR, c->log, 0,
                      "amesh upstream tls: SSL_set1_verify_cert_store() failed");
            return NGX_ERROR;
        }
    }

    if (p->store || p->nsans || p->auto_san) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, ngx_amesh_tls_verify);

    } else {
        /* Envoy without a validation context accepts any certificate */
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    }

    return NGX_OK;
}


/*
 * Makes the handshake of the downstream TLS connection whose SSL object is ssl (ngx.ssl's
 * get_req_ssl_pointer in the ssl_certificate phase) fail, with a TLS alert, unless the
 * client presents a certificate that chains to the trusted roots and, when profile has
 * subject alt name matchers, one of whose SANs meets one of them: what Envoy's
 * certificate validator does on an inbound listener. The roots are the profile's when it
 * has some, else those already set for the connection (ngx.ssl.verify_client's, or the
 * server's ssl_client_certificate). nginx's own verify callback, and ngx.ssl's unless
 * told otherwise, accept any certificate and leave the result for later: a request or
 * session would start before its peer is refused. Returns 0, or -1 with the reason in
 * err.
 */
int
amesh_tls_verify_client(void *ssl, void *profile, char *err, size_t err_len)
{
    ngx_connection_t              *c;
    ngx_pool_cleanup_t            *cln;
    ngx_amesh_tls_conn_t          *tc;
    ngx_amesh_tls_profile_t       *p;

    p = profile;
    c = ssl ? ngx_ssl_get_connection(ssl) : NULL;

    if (p == NULL || c == NULL || c->ssl == NULL || c->ssl->connection != ssl) {
        ngx_amesh_tls_err(err, err_len, "not a TLS connection of nginx's");
        return -1;
    }

    /* the module whose copy of this function LuaJIT found may not have run its
     * postconfiguration (a stream module in an nginx without stream{}) */
    if (ngx_amesh_tls_init_index(c->log) != NGX_OK) {
        ngx_amesh_tls_err(err, err_len, "SSL_get_ex_new_index() failed");
        return -1;
    }

    cln = ngx_pool_cleanup_add(c->pool, sizeof(ngx_amesh_tls_conn_t));
    if (cln == NULL) {
        ngx_amesh_tls_err(err, err_len, "no memory");
        return -1;
    }

    tc = cln->data;
    ngx_memzero(tc, sizeof(ngx_amesh_tls_conn_t));
    tc->profile = p;
    tc->downstream = 1;
    p->refs++;
    cln->handler = ngx_amesh_tls_conn_cleanup;

    if (SSL_set_ex_data(ssl, ngx_amesh_tls_conn_index, tc) != 1) {
        ngx_amesh_tls_err(err, err_len, "SSL_set_ex_data() failed");
        return -1;
    }

    if (p->store != NULL && SSL_set1_verify_cert_store(ssl, p->store) != 1) {
        ngx_amesh_tls_err(err, err_len, "SSL_set1_verify_cert_store() failed");
        return -1;
    }

    SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                   ngx_amesh_tls_verify);

    return 0;
}


#endif /* NGX_AMESH_UPSTREAM_TLS_H */
