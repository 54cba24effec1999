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
 * A stream session is one connection: the answer is kept in the session's module context.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>

#include "ngx_amesh_original_dst.h"


static ngx_int_t ngx_stream_amesh_original_dst_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_stream_amesh_original_dst_variable(
    ngx_stream_session_t *s, ngx_stream_variable_value_t *v, uintptr_t data);


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

      ngx_stream_null_variable
};


static ngx_stream_module_t  ngx_stream_amesh_original_dst_module_ctx = {
    ngx_stream_amesh_original_dst_add_variables,  /* preconfiguration */
    NULL,                                         /* postconfiguration */

    NULL,                                         /* create main configuration */
    NULL,                                         /* init main configuration */

    NULL,                                         /* create server configuration */
    NULL                                          /* merge server configuration */
};


ngx_module_t  ngx_stream_amesh_original_dst_module = {
    NGX_MODULE_V1,
    &ngx_stream_amesh_original_dst_module_ctx,    /* module context */
    NULL,                                         /* module directives */
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


static ngx_int_t
ngx_stream_amesh_original_dst_variable(ngx_stream_session_t *s,
    ngx_stream_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                 *str;
    ngx_amesh_original_dst_t  *dst;

    dst = ngx_stream_get_module_ctx(s, ngx_stream_amesh_original_dst_module);

    if (dst == NULL) {
        dst = ngx_pcalloc(s->connection->pool,
                          sizeof(ngx_amesh_original_dst_t));
        if (dst == NULL) {
            return NGX_ERROR;
        }

        if (ngx_amesh_original_dst_resolve(s->connection, s->connection->pool,
                                           dst)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }

        /* NGX_DECLINED (a unix socket) is kept too, as empty strings */
        ngx_stream_set_ctx(s, dst, ngx_stream_amesh_original_dst_module);
    }

    if (dst->port.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    str = (ngx_str_t *) ((char *) dst + data);

    v->len = str->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = str->data;

    return NGX_OK;
}
