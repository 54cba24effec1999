/*
 * Licensed under the Apache License, Version 2.0.
 *
 * Per-session TLS settings for the connections nginx's stream proxy makes to upstreams:
 * the stream twin of ngx_http_amesh_upstream_tls_module, with the same profiles
 * (ngx_amesh_upstream_tls.h). Envoy's tcp_proxy connects to each endpoint with the
 * transport socket of its cluster (Istio mTLS to pods with a sidecar, plaintext to the
 * others); nginx's stream proxy turns TLS on per server (proxy_ssl), has no ALPN before
 * 1.29 and checks no subject alt names.
 *
 * The stream proxy reads its settings from the session's server configuration
 * (s->srv_conf) each time it needs one, in every nginx version. So a server marked
 *
 *     server {
 *         amesh_upstream_tls_template;
 *         proxy_pass apisix_backend;
 *     }
 *
 * is a template that is never listened on: its stream proxy configuration has TLS on,
 * proxy_ssl_name $amesh_upstream_ssl_name and no session reuse (the directive sets these
 * itself, so that they cannot be missing), and the settings it inherits from stream{},
 * as the servers that use it do; proxy_pass names the upstream those servers name.
 *
 * Lua registers each profile once (amesh_stream_upstream_tls_register, which returns a
 * number naming it and holds a reference until amesh_stream_upstream_tls_unregister) and
 * attaches it to the session by setting $amesh_upstream_tls to that number
 * (lua/amesh/upstream_tls.lua), in the preread phase for the first connection or in the
 * balancer for a retry. A number, not an address: whatever writes the variable, only a
 * registered profile is ever used. The session's server configuration then becomes a copy of
 * its own in which the stream proxy's entry is the template's; setting "" detaches the
 * profile and restores the server's own. nginx makes the next upstream connection with
 * TLS and evaluates $amesh_upstream_ssl_name after creating its SSL object; that
 * variable's handler applies the profile (ALPN, certificate and key, roots, subject alt
 * names, versions, ciphers, curves) and returns its SNI, as in http.
 *
 * Reading $amesh_upstream_tls tells whether the last attachment took effect: "on", "" for
 * none, or "error: " and the reason. Lua checks it and closes the session otherwise: a
 * connection that should have TLS never goes out in plaintext.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>

#if !(NGX_STREAM_SSL)
#error ngx_stream_amesh_upstream_tls_module needs nginx with the stream ssl module
#endif

#include "ngx_amesh_upstream_tls.h"


extern ngx_module_t  ngx_stream_proxy_module;


typedef struct {
    /* the template server's configuration, NULL without one */
    void                     **template_srv_conf;
} ngx_stream_amesh_upstream_tls_main_conf_t;


/* A registered profile, in the process's registry (an rbtree keyed by its number). */
typedef struct {
    ngx_rbtree_node_t          node;
    ngx_amesh_tls_profile_t   *profile;
} ngx_stream_amesh_tls_handle_t;


/* A session's profile and the two server configurations it switches between. */
typedef struct {
    ngx_amesh_tls_profile_t   *profile;
    void                     **srv_conf;
    void                     **tls_srv_conf;
    const char                *error;
} ngx_stream_amesh_tls_session_t;


static ngx_int_t ngx_stream_amesh_upstream_tls_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_stream_amesh_upstream_tls_init(ngx_conf_t *cf);
static void *ngx_stream_amesh_upstream_tls_create_main_conf(ngx_conf_t *cf);
static char *ngx_stream_amesh_upstream_tls_template(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_stream_amesh_upstream_tls_get(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data);
static void ngx_stream_amesh_upstream_tls_set(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_stream_amesh_upstream_ssl_name(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data);


/* The registry: per process, as the Lua VM that registers profiles is. */
static ngx_rbtree_t       ngx_stream_amesh_tls_handles;
static ngx_rbtree_node_t  ngx_stream_amesh_tls_handles_sentinel;
static ngx_rbtree_key_t   ngx_stream_amesh_tls_last_handle;


static ngx_command_t  ngx_stream_amesh_upstream_tls_commands[] = {

    { ngx_string("amesh_upstream_tls_template"),
      NGX_STREAM_SRV_CONF|NGX_CONF_NOARGS,
      ngx_stream_amesh_upstream_tls_template,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_stream_variable_t  ngx_stream_amesh_upstream_tls_vars[] = {

    { ngx_string("amesh_upstream_tls"), ngx_stream_amesh_upstream_tls_set,
      ngx_stream_amesh_upstream_tls_get, 0,
      NGX_STREAM_VAR_CHANGEABLE|NGX_STREAM_VAR_NOCACHEABLE, 0 },

    { ngx_string("amesh_upstream_ssl_name"), NULL,
      ngx_stream_amesh_upstream_ssl_name, 0, NGX_STREAM_VAR_NOCACHEABLE, 0 },

      ngx_stream_null_variable
};


static ngx_stream_module_t  ngx_stream_amesh_upstream_tls_module_ctx = {
    ngx_stream_amesh_upstream_tls_add_variables,     /* preconfiguration */
    ngx_stream_amesh_upstream_tls_init,              /* postconfiguration */

    ngx_stream_amesh_upstream_tls_create_main_conf,  /* create main configuration */
    NULL,                                            /* init main configuration */

    NULL,                                            /* create server configuration */
    NULL                                             /* merge server configuration */
};


ngx_module_t  ngx_stream_amesh_upstream_tls_module = {
    NGX_MODULE_V1,
    &ngx_stream_amesh_upstream_tls_module_ctx,    /* module context */
    ngx_stream_amesh_upstream_tls_commands,       /* module directives */
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
ngx_stream_amesh_upstream_tls_add_variables(ngx_conf_t *cf)
{
    ngx_stream_variable_t  *var, *v;

    for (v = ngx_stream_amesh_upstream_tls_vars; v->name.len; v++) {
        var = ngx_stream_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->set_handler = v->set_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_stream_amesh_upstream_tls_init(ngx_conf_t *cf)
{
    return ngx_amesh_tls_init_index(cf->log);
}


static void *
ngx_stream_amesh_upstream_tls_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_stream_amesh_upstream_tls_main_conf_t));
}


/* Runs the stream proxy's directive "name value" in the server being parsed. */
static char *
ngx_stream_amesh_upstream_tls_proxy_set(ngx_conf_t *cf, const char *name,
    const char *value)
{
    char           *rv;
    void           *conf, **confp;
    ngx_str_t      *arg;
    ngx_array_t     args, *saved;
    ngx_command_t  *cmd;

    for (cmd = ngx_stream_proxy_module.commands; cmd->name.len; cmd++) {
        if (cmd->name.len == ngx_strlen(name)
            && ngx_strncmp(cmd->name.data, name, cmd->name.len) == 0)
        {
            break;
        }
    }

    if (cmd->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "amesh_upstream_tls_template: this nginx's stream proxy "
                           "has no \"%s\" directive", name);
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&args, cf->pool, 2, sizeof(ngx_str_t)) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    arg = ngx_array_push_n(&args, 2);
    if (arg == NULL) {
        return NGX_CONF_ERROR;
    }

    /* copies in the cycle's pool: a complex value keeps pointers into its text */
    arg[0].len = ngx_strlen(name);
    arg[0].data = ngx_pstrdup(cf->pool, &(ngx_str_t) { arg[0].len, (u_char *) name });
    arg[1].len = ngx_strlen(value);
    arg[1].data = ngx_pstrdup(cf->pool, &(ngx_str_t) { arg[1].len, (u_char *) value });
    if (arg[0].data == NULL || arg[1].data == NULL) {
        return NGX_CONF_ERROR;
    }

    confp = *(void ***) ((char *) cf->ctx + cmd->conf);
    conf = confp[ngx_stream_proxy_module.ctx_index];

    saved = cf->args;
    cf->args = &args;
    rv = cmd->set(cf, cmd, conf);
    cf->args = saved;

    if (rv != NGX_CONF_OK) {
        if (rv != NGX_CONF_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "amesh_upstream_tls_template: \"%s %s\" %s",
                               name, value, rv);
        }

        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_stream_amesh_upstream_tls_template(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_uint_t                                  i;
    ngx_stream_conf_ctx_t                      *ctx;
    ngx_stream_core_srv_conf_t                 *cscf;
    ngx_stream_amesh_upstream_tls_main_conf_t  *amcf;

    static const char  *settings[][2] = {
        { "proxy_ssl", "on" },
        { "proxy_ssl_server_name", "on" },
        { "proxy_ssl_name", "$amesh_upstream_ssl_name" },
        /* a session verified under another profile would skip the checks */
        { "proxy_ssl_session_reuse", "off" },
    };

    amcf = ngx_stream_conf_get_module_main_conf(cf,
                                                ngx_stream_amesh_upstream_tls_module);
    if (amcf->template_srv_conf != NULL) {
        return "is duplicate: one server is the template";
    }

    for (i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        if (ngx_stream_amesh_upstream_tls_proxy_set(cf, settings[i][0], settings[i][1])
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    /* sessions use its configuration; nothing connects to it */
    cscf = ngx_stream_conf_get_module_srv_conf(cf, ngx_stream_core_module);
    cscf->listen = 1;

    ctx = cf->ctx;
    amcf->template_srv_conf = ctx->srv_conf;

    return NGX_CONF_OK;
}


/* ---- the registry ---- */

static ngx_stream_amesh_tls_handle_t *
ngx_stream_amesh_tls_handle(ngx_rbtree_key_t key)
{
    ngx_rbtree_node_t  *node, *sentinel;

    if (ngx_stream_amesh_tls_handles.root == NULL) {
        return NULL;
    }

    node = ngx_stream_amesh_tls_handles.root;
    sentinel = ngx_stream_amesh_tls_handles.sentinel;

    while (node != sentinel) {
        if (key == node->key) {
            return (ngx_stream_amesh_tls_handle_t *) node;
        }

        node = (key < node->key) ? node->left : node->right;
    }

    return NULL;
}


/*
 * Registers profile and returns the number that names it in $amesh_upstream_tls (0: no
 * memory). The registry holds a reference until the number is unregistered.
 */
uint64_t
amesh_stream_upstream_tls_register(void *profile)
{
    ngx_stream_amesh_tls_handle_t  *h;

    if (profile == NULL) {
        return 0;
    }

    if (ngx_stream_amesh_tls_handles.root == NULL) {
        ngx_rbtree_init(&ngx_stream_amesh_tls_handles,
                        &ngx_stream_amesh_tls_handles_sentinel,
                        ngx_rbtree_insert_value);
    }

    h = ngx_alloc(sizeof(ngx_stream_amesh_tls_handle_t), ngx_cycle->log);
    if (h == NULL) {
        return 0;
    }

    h->profile = profile;
    h->profile->refs++;
    h->node.key = ++ngx_stream_amesh_tls_last_handle;
    ngx_rbtree_insert(&ngx_stream_amesh_tls_handles, &h->node);

    return h->node.key;
}


void
amesh_stream_upstream_tls_unregister(uint64_t key)
{
    ngx_stream_amesh_tls_handle_t  *h;

    h = ngx_stream_amesh_tls_handle((ngx_rbtree_key_t) key);
    if (h == NULL) {
        return;
    }

    ngx_rbtree_delete(&ngx_stream_amesh_tls_handles, &h->node);
    ngx_amesh_tls_profile_unref(h->profile);
    ngx_free(h);
}


/* ---- sessions ---- */

static void
ngx_stream_amesh_tls_session_cleanup(void *data)
{
    ngx_stream_amesh_tls_session_t  *st = data;

    ngx_amesh_tls_profile_unref(st->profile);
    st->profile = NULL;
}


static ngx_stream_amesh_tls_session_t *
ngx_stream_amesh_tls_session(ngx_stream_session_t *s, ngx_uint_t create)
{
    ngx_pool_cleanup_t              *cln;
    ngx_stream_amesh_tls_session_t  *st;

    st = ngx_stream_get_module_ctx(s, ngx_stream_amesh_upstream_tls_module);
    if (st != NULL || !create) {
        return st;
    }

    cln = ngx_pool_cleanup_add(s->connection->pool,
                               sizeof(ngx_stream_amesh_tls_session_t));
    if (cln == NULL) {
        return NULL;
    }

    st = cln->data;
    ngx_memzero(st, sizeof(ngx_stream_amesh_tls_session_t));
    cln->handler = ngx_stream_amesh_tls_session_cleanup;

    ngx_stream_set_ctx(s, st, ngx_stream_amesh_upstream_tls_module);

    return st;
}


/* Points the session at its own server configuration again. */
static void
ngx_stream_amesh_tls_restore(ngx_stream_session_t *s,
    ngx_stream_amesh_tls_session_t *st)
{
    if (st->tls_srv_conf != NULL && s->srv_conf == st->tls_srv_conf) {
        s->srv_conf = st->srv_conf;
    }
}


/*
 * Points the session at a copy of its server configuration whose stream proxy entry is
 * the template's. The copy is made again when the session's server changed since (a
 * virtual server chosen by name).
 */
static const char *
ngx_stream_amesh_tls_switch(ngx_stream_session_t *s,
    ngx_stream_amesh_tls_session_t *st)
{
    ngx_uint_t                                  idx;
    ngx_stream_amesh_upstream_tls_main_conf_t  *amcf;

    amcf = ngx_stream_get_module_main_conf(s, ngx_stream_amesh_upstream_tls_module);
    if (amcf == NULL || amcf->template_srv_conf == NULL) {
        return "no stream server is an amesh_upstream_tls_template";
    }

    if (s->srv_conf == st->tls_srv_conf) {
        return NULL;
    }

    if (st->tls_srv_conf == NULL) {
        st->tls_srv_conf = ngx_palloc(s->connection->pool,
                                      ngx_stream_max_module * sizeof(void *));
        if (st->tls_srv_conf == NULL) {
            return "no memory";
        }
    }

    idx = ngx_stream_proxy_module.ctx_index;

    st->srv_conf = s->srv_conf;
    ngx_memcpy(st->tls_srv_conf, s->srv_conf, ngx_stream_max_module * sizeof(void *));
    st->tls_srv_conf[idx] = amcf->template_srv_conf[idx];
    s->srv_conf = st->tls_srv_conf;

    return NULL;
}


/* $amesh_upstream_tls = "<registered number>" attaches a profile, "" none. */
static void
ngx_stream_amesh_upstream_tls_set(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    u_char                          *q, *last;
    ngx_rbtree_key_t                 key;
    ngx_amesh_tls_profile_t         *p;
    ngx_stream_amesh_tls_session_t  *st;
    ngx_stream_amesh_tls_handle_t   *h;

    st = ngx_stream_amesh_tls_session(s, v->len != 0);
    if (st == NULL) {
        if (v->len != 0) {
            ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                          "amesh upstream tls: no memory");
        }

        return;
    }

    st->error = NULL;

    if (v->len == 0) {
        ngx_amesh_tls_profile_unref(st->profile);
        st->profile = NULL;
        ngx_stream_amesh_tls_restore(s, st);
        return;
    }

    key = 0;
    last = v->data + v->len;
    for (q = v->data; q < last; q++) {
        if (*q < '0' || *q > '9' || key > ((ngx_rbtree_key_t) -1 - 9) / 10) {
            st->error = "not a profile number";
            return;
        }

        key = key * 10 + (*q - '0');
    }

    h = ngx_stream_amesh_tls_handle(key);
    if (h == NULL) {
        st->error = "no such profile";
        return;
    }

    p = h->profile;

    st->error = ngx_stream_amesh_tls_switch(s, st);
    if (st->error != NULL) {
        ngx_amesh_tls_profile_unref(st->profile);
        st->profile = NULL;
        ngx_stream_amesh_tls_restore(s, st);
        return;
    }

    p->refs++;
    ngx_amesh_tls_profile_unref(st->profile);
    st->profile = p;
}


static ngx_int_t
ngx_stream_amesh_upstream_tls_get(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    u_char                          *q;
    size_t                           len;
    ngx_stream_amesh_tls_session_t  *st;

    st = ngx_stream_amesh_tls_session(s, 0);

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    if (st != NULL && st->error != NULL) {
        len = sizeof("error: ") - 1 + ngx_strlen(st->error);
        q = ngx_pnalloc(s->connection->pool, len);
        if (q == NULL) {
            return NGX_ERROR;
        }

        v->data = q;
        v->len = len;
        q = ngx_cpymem(q, "error: ", sizeof("error: ") - 1);
        ngx_memcpy(q, st->error, ngx_strlen(st->error));
        return NGX_OK;
    }

    if (st != NULL && st->profile != NULL) {
        v->data = (u_char *) "on";
        v->len = 2;
        return NGX_OK;
    }

    v->data = (u_char *) "";
    v->len = 0;
    return NGX_OK;
}


/*
 * The template's proxy_ssl_name: applies the session's profile to the new upstream
 * connection and names its SNI. Envoy's auto_sni takes the name from the request,
 * which a TCP connection does not have: no SNI then.
 */
static ngx_int_t
ngx_stream_amesh_upstream_ssl_name(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                        name;
    ngx_connection_t                *c;
    ngx_amesh_tls_profile_t         *p;
    ngx_stream_amesh_tls_session_t  *st;

    st = ngx_stream_amesh_tls_session(s, 0);
    p = st ? st->profile : NULL;
    c = s->upstream ? s->upstream->peer.connection : NULL;

    if (p == NULL) {
        if (c != NULL && c->ssl != NULL && !c->ssl->handshaked) {
            /* only a profile switches a session to the template */
            ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                          "amesh upstream tls: a TLS connection without a profile");
            return NGX_ERROR;
        }

        v->not_found = 1;
        return NGX_OK;
    }

    name.len = 0;
    name.data = NULL;

    if (!p->auto_sni) {
        name = p->sni;
    }

    if (c != NULL && c->ssl != NULL && !c->ssl->handshaked
        && SSL_get_ex_data(c->ssl->connection, ngx_amesh_tls_conn_index) == NULL)
    {
        if (ngx_amesh_tls_apply(c, p, &name) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_STREAM, s->connection->log, 0,
                       "amesh upstream tls: profile applied, sni \"%V\"", &name);
    }

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
