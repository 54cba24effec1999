/*
 * Licensed under the Apache License, Version 2.0.
 *
 * Per-request TLS settings for proxied upstream connections: what Envoy's
 * UpstreamTlsContext sets per cluster and nginx's proxy module sets only per location.
 * A profile (SNI, ALPN, client certificate and key, trusted roots and CRLs, expected
 * subject alt names, protocol versions, ciphers, curves) is made once from Lua through
 * LuaJIT's FFI and attached to a request; every TLS connection that request opens to
 * an upstream then uses it.
 *
 * The hook is the variable $amesh_upstream_ssl_name, named by
 *
 *     proxy_ssl_server_name on;
 *     proxy_ssl_name $amesh_upstream_ssl_name;
 *
 * nginx evaluates proxy_ssl_name for each new upstream TLS connection, after it created
 * the connection's SSL object and before the handshake (ngx_http_upstream_ssl_name).
 * For a request with a profile the variable's handler applies the profile to that SSL
 * object and returns the profile's SNI; otherwise it returns $upstream_host (what APISIX
 * names there), so other requests are untouched. A request with a profile whose
 * location does not evaluate the variable that way is refused when the profile is
 * attached (amesh_upstream_tls_set), never sent without it.
 *
 * A server whose certificate does not chain to the profile's roots, or has none of the
 * expected subject alt names, fails the handshake: nginx counts it as a failed attempt
 * (the next node, or 502), as Envoy counts a TLS error. Connections with a profile do
 * not resume TLS sessions: a session verified under other settings would skip this
 * verification.
 *
 * Lua side: lua/amesh/upstream_tls.lua.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#if !(NGX_HTTP_SSL)
#error ngx_http_amesh_upstream_tls_module needs nginx with the http ssl module
#endif

#include "ngx_amesh_upstream_tls.h"


/* The proxy module's location configuration starts with its upstream configuration
 * (ngx_http_proxy_loc_conf_t in ngx_http_proxy_module.c), in every nginx version. */
extern ngx_module_t  ngx_http_proxy_module;

typedef struct {
    ngx_http_upstream_conf_t   upstream;
} ngx_http_amesh_proxy_loc_conf_head_t;


/* A request's profile, in a cleanup of its pool: it survives internal redirects (which
 * clear module contexts) and is told apart from subrequests' (which share the pool). */
typedef struct {
    ngx_http_request_t            *request;
    ngx_amesh_tls_profile_t       *profile;
    unsigned                       probing:1;
    unsigned                       probed:1;
} ngx_http_amesh_tls_request_t;


static ngx_int_t ngx_http_amesh_upstream_tls_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_amesh_upstream_tls_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_amesh_upstream_ssl_name(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_str_t  ngx_http_amesh_fallback_name = ngx_string("upstream_host");
static ngx_uint_t ngx_http_amesh_fallback_key;


static ngx_http_variable_t  ngx_http_amesh_upstream_tls_vars[] = {

    { ngx_string("amesh_upstream_ssl_name"), NULL,
      ngx_http_amesh_upstream_ssl_name, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_http_module_t  ngx_http_amesh_upstream_tls_module_ctx = {
    ngx_http_amesh_upstream_tls_add_variables,  /* preconfiguration */
    ngx_http_amesh_upstream_tls_init,           /* postconfiguration */

    NULL,                                       /* create main configuration */
    NULL,                                       /* init main configuration */

    NULL,                                       /* create server configuration */
    NULL,                                       /* merge server configuration */

    NULL,                                       /* create location configuration */
    NULL                                        /* merge location configuration */
};


ngx_module_t  ngx_http_amesh_upstream_tls_module = {
    NGX_MODULE_V1,
    &ngx_http_amesh_upstream_tls_module_ctx,    /* module context */
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


static ngx_int_t
ngx_http_amesh_upstream_tls_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_amesh_upstream_tls_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_amesh_upstream_tls_init(ngx_conf_t *cf)
{
    ngx_http_amesh_fallback_key = ngx_hash_key(ngx_http_amesh_fallback_name.data,
                                               ngx_http_amesh_fallback_name.len);

    if (ngx_amesh_tls_init_index(cf->log) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* ---- requests ---- */

static void
ngx_http_amesh_tls_request_cleanup(void *data)
{
    ngx_http_amesh_tls_request_t  *st = data;

    ngx_amesh_tls_profile_unref(st->profile);
    st->profile = NULL;
}


static ngx_http_amesh_tls_request_t *
ngx_http_amesh_tls_request(ngx_http_request_t *r, ngx_uint_t create)
{
    ngx_pool_cleanup_t            *cln;
    ngx_http_amesh_tls_request_t  *st;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_amesh_tls_request_cleanup) {
            st = cln->data;
            if (st->request == r) {
                return st;
            }
        }
    }

    if (!create) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_amesh_tls_request_t));
    if (cln == NULL) {
        return NULL;
    }

    st = cln->data;
    ngx_memzero(st, sizeof(ngx_http_amesh_tls_request_t));
    st->request = r;
    cln->handler = ngx_http_amesh_tls_request_cleanup;

    return st;
}


/*
 * Checks that the request's location hands new upstream TLS connections to this
 * module: proxy_ssl_name evaluates $amesh_upstream_ssl_name.
 */
static const char *
ngx_http_amesh_tls_probe(ngx_http_request_t *r, ngx_http_amesh_tls_request_t *st)
{
    ngx_str_t                              name;
    ngx_http_upstream_conf_t              *ucf;
    ngx_http_amesh_proxy_loc_conf_head_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_proxy_module);
    if (plcf == NULL) {
        return "the location has no proxy configuration";
    }

    ucf = &plcf->upstream;

    if (ucf->ssl == NULL) {
        return "the location's proxy_pass cannot make TLS connections";
    }

    if (!ucf->ssl_server_name && !ucf->ssl_verify) {
        return "proxy_ssl_server_name is off in the location";
    }

    if (ucf->ssl_name == NULL) {
        return "proxy_ssl_name is not $amesh_upstream_ssl_name in the location";
    }

    st->probing = 1;
    st->probed = 0;
    (void) ngx_http_complex_value(r, ucf->ssl_name, &name);
    st->probing = 0;

    if (!st->probed) {
        return "proxy_ssl_name is not $amesh_upstream_ssl_name in the location";
    }

    return NULL;
}


/*
 * Attaches profile (NULL: none) to the request r for the TLS connections it opens from
 * now on, and returns 0; or returns -1 with the reason in err. In the balancer phase
 * (r->upstream exists) it also turns TLS on or off for the next connection, so that
 * each attempt can go to a node of another kind than the first.
 */
int
amesh_upstream_tls_set(ngx_http_request_t *r, void *profile, char *err,
    size_t err_len)
{
    const char                    *why;
    ngx_http_upstream_t           *u;
    ngx_http_amesh_tls_request_t  *st;

    st = ngx_http_amesh_tls_request(r, profile != NULL);
    if (st == NULL) {
        if (profile == NULL) {
            goto upstream;
        }

        ngx_amesh_tls_err(err, err_len, "no memory");
        return -1;
    }

    if (profile != NULL && r->upstream == NULL) {
        why = ngx_http_amesh_tls_probe(r, st);
        if (why != NULL) {
            ngx_amesh_tls_err(err, err_len, why);
            return -1;
        }
    }

    if (profile != NULL) {
        ((ngx_amesh_tls_profile_t *) profile)->refs++;
    }

    ngx_amesh_tls_profile_unref(st->profile);
    st->profile = profile;

upstream:

    u = r->upstream;
    if (u != NULL) {
        if (profile != NULL
            && (u->conf == NULL || u->conf->ssl == NULL || u->conf->ssl->ctx == NULL))
        {
            ngx_amesh_tls_err(err, err_len,
                           "the location's proxy_pass cannot make TLS connections");
            return -1;
        }

        u->ssl = (profile != NULL);
    }

    return 0;
}


/* A session of a connection with a profile is neither resumed nor saved. */
static ngx_int_t
ngx_http_amesh_tls_no_session(ngx_peer_connection_t *pc, void *data)
{
    return NGX_OK;
}


static void
ngx_http_amesh_tls_no_save(ngx_peer_connection_t *pc, void *data)
{
}



/* Applies p to the request's new upstream connection c, whose SNI will be sni. */
static ngx_int_t
ngx_http_amesh_tls_apply(ngx_http_request_t *r, ngx_connection_t *c,
    ngx_amesh_tls_profile_t *p, ngx_str_t *sni)
{
    if (ngx_amesh_tls_apply(c, p, sni) != NGX_OK) {
        return NGX_ERROR;
    }

    r->upstream->peer.set_session = ngx_http_amesh_tls_no_session;
    r->upstream->peer.save_session = ngx_http_amesh_tls_no_save;

    return NGX_OK;
}


static ngx_int_t
ngx_http_amesh_upstream_ssl_name(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t                      name;
    ngx_connection_t              *c;
    ngx_http_upstream_t           *u;
    ngx_http_variable_value_t     *fb;
    ngx_amesh_tls_profile_t       *p;
    ngx_http_amesh_tls_request_t  *st;

    st = ngx_http_amesh_tls_request(r, 0);

    if (st != NULL && st->probing) {
        st->probed = 1;
        v->not_found = 1;
        return NGX_OK;
    }

    p = st ? st->profile : NULL;

    name.len = 0;
    name.data = NULL;

    if (p == NULL || p->auto_sni) {
        fb = ngx_http_get_variable(r, &ngx_http_amesh_fallback_name,
                                   ngx_http_amesh_fallback_key);
        if (fb == NULL) {
            return NGX_ERROR;
        }

        if (!fb->not_found) {
            name.len = fb->len;
            name.data = fb->data;
        }

    } else {
        name = p->sni;
    }

    if (p != NULL) {
        u = r->upstream;
        c = u ? u->peer.connection : NULL;

        if (c == NULL || c->ssl == NULL || c->ssl->handshaked) {
            /* read outside of a new connection (a log format, say) */
            goto done;
        }

        if (ngx_http_amesh_tls_apply(r, c, p, &name) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "amesh upstream tls: profile applied, sni \"%V\"", &name);
    }

done:

    if (name.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = name.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = name.data;

    return NGX_OK;
}
