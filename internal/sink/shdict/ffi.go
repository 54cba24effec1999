package shdict

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>

// Signatures of lua-nginx-module's FFI shared-dict API (0.10.x; the same for
// stream-lua-nginx-module's ngx_stream_* and OpenResty's meta module ngx_meta_*).
typedef int (*shdict_store_fn)(void *zone, int op, const unsigned char *key,
    size_t key_len, int value_type, const unsigned char *str_value_buf,
    size_t str_value_len, double num_value, long exptime, int user_flags,
    char **errmsg, int *forcible);
typedef int (*shdict_get_fn)(void *zone, const unsigned char *key, size_t key_len,
    int *value_type, unsigned char **str_value_buf, size_t *str_value_len,
    double *num_value, int *user_flags, int get_stale, int *is_stale, char **errmsg);
typedef int (*shdict_flush_all_fn)(void *zone);
typedef size_t (*shdict_capacity_fn)(void *zone);

static void *amesh_dlsym(const char *name) {
	return dlsym(RTLD_DEFAULT, name);
}

static int amesh_store(void *fn, void *zone, int op, const char *key, size_t key_len,
		int value_type, const char *buf, size_t len, char **errmsg, int *forcible) {
	*forcible = 0;
	*errmsg = NULL;
	return ((shdict_store_fn) fn)(zone, op, (const unsigned char *) key, key_len,
		value_type, (const unsigned char *) buf, len, 0, 0, 0, errmsg, forcible);
}

// amesh_get reads a value. A string that fits in buf (*len bytes) is copied there
// and *out is NULL; for a longer one the module mallocs a buffer, returned in *out for
// the caller to copy and free (amesh_free), so Go never keeps module memory.
static int amesh_get(void *fn, void *zone, const char *key, size_t key_len,
		int *value_type, char *buf, size_t *len, double *num, char **errmsg,
		unsigned char **out) {
	unsigned char *p = (unsigned char *) buf;
	int flags = 0, is_stale = 0;
	*errmsg = NULL;
	int rc = ((shdict_get_fn) fn)(zone, (const unsigned char *) key, key_len,
		value_type, &p, len, num, &flags, 0, &is_stale, errmsg);
	*out = p == (unsigned char *) buf ? NULL : p;
	return rc;
}

static void amesh_free(void *p) { free(p); }

// amesh_exiting reads nginx's globals ngx_quit and ngx_terminate (sig_atomic_t, set by
// the signal handlers) and ngx_exiting (ngx_uint_t), any of which may be NULL.
static int amesh_exiting(void *quit, void *terminate, void *exiting) {
	return (quit && *(volatile sig_atomic_t *) quit)
		|| (terminate && *(volatile sig_atomic_t *) terminate)
		|| (exiting && *(volatile uintptr_t *) exiting);
}

static int amesh_flush_all(void *fn, void *zone) {
	return ((shdict_flush_all_fn) fn)(zone);
}

static size_t amesh_capacity(void *fn, void *zone) {
	return ((shdict_capacity_fn) fn)(zone);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"strconv"
	"unsafe"
)

// Constants of lua-nginx-module's ngx_http_lua_shdict.c.
const (
	opSafeStore = 0x0004 // NGX_HTTP_LUA_SHDICT_SAFE_STORE: fail with "no memory" instead of evicting
	typeNil     = 0      // SHDICT_TNIL: with a NULL buffer, store deletes the key
	typeNumber  = 3      // SHDICT_TNUMBER
	typeString  = 4      // SHDICT_TSTRING
	rcOK        = 0      // NGX_OK
	rcDeclined  = -5     // NGX_DECLINED: get of a missing key
)

// prefixes are tried in order: lua-nginx-module (Debian, OpenResty) and OpenResty's
// meta-lua module, which APISIX builds may use instead.
var prefixes = []string{"ngx_http_lua_ffi_shdict_", "ngx_meta_lua_ffi_shdict_"}

// funcs are the FFI entry points, resolved with dlsym in the running process.
type funcs struct {
	store, get, flushAll unsafe.Pointer
	capacity             unsafe.Pointer // optional (lua-nginx-module 0.10.11 and later)
	prefix               string
	// nginx's shutdown flags; nil when the symbols are not exported.
	quit, terminate, exiting unsafe.Pointer
}

func resolve() (funcs, error) {
	for _, p := range prefixes {
		f := funcs{prefix: p, store: sym(p + "store"), get: sym(p + "get"), flushAll: sym(p + "flush_all")}
		if f.store != nil && f.get != nil && f.flushAll != nil {
			f.quit, f.terminate, f.exiting = sym("ngx_quit"), sym("ngx_terminate"), sym("ngx_exiting")
			f.capacity = sym(p + "capacity")
			return f, nil
		}
	}
	return funcs{}, errors.New("shdict: neither ngx_http_lua_ffi_shdict_store nor ngx_meta_lua_ffi_shdict_store found in the process (is lua-nginx-module loaded?)")
}

func sym(name string) unsafe.Pointer {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return C.amesh_dlsym(cs)
}

// zone is one nginx shared dict, reached through the FFI functions.
type zone struct {
	f   funcs
	ptr unsafe.Pointer // ngx_shm_zone_t *, owned by nginx
}

// cbuf returns a C-readable pointer to b's bytes. The FFI functions copy the key and
// value into shared memory before returning and keep no reference, so passing Go
// memory for the duration of the call is allowed by the cgo pointer rules.
func cbuf(b []byte) *C.char {
	if len(b) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(&b[0]))
}

// set stores value under key. With evict false it uses SAFE_STORE: a full dict is
// an error. With evict true the module may evict least recently used entries to make
// room, and evicted reports whether it did.
func (z zone) set(key string, value []byte, evict bool) (evicted bool, err error) {
	kb := []byte(key)
	buf := cbuf(value)
	if buf == nil {
		// An empty string still needs a non-NULL buffer: NULL means delete.
		buf = (*C.char)(unsafe.Pointer(&kb[0]))
	}
	op := C.int(opSafeStore)
	if evict {
		op = 0
	}
	var (
		errmsg   *C.char
		forcible C.int
	)
	rc := C.amesh_store(z.f.store, z.ptr, op, cbuf(kb), C.size_t(len(kb)),
		C.int(typeString), buf, C.size_t(len(value)), &errmsg, &forcible)
	return forcible != 0, storeErr("set", key, rc, errmsg)
}

func (z zone) delete(key string) error {
	kb := []byte(key)
	var (
		errmsg   *C.char
		forcible C.int
	)
	rc := C.amesh_store(z.f.store, z.ptr, 0, cbuf(kb), C.size_t(len(kb)), C.int(typeNil), nil, 0, &errmsg, &forcible)
	return storeErr("delete", key, rc, errmsg)
}

func storeErr(op, key string, rc C.int, errmsg *C.char) error {
	if rc == rcOK {
		return nil
	}
	msg := "unknown error"
	if errmsg != nil {
		msg = C.GoString(errmsg) // a static string in the module
	}
	return &StoreError{Op: op, Key: key, Msg: msg}
}

// getString returns the value of key as a string (a number is formatted), and false
// if it does not exist. Values of any length are returned whole.
func (z zone) getString(key string) (string, bool, error) {
	kb := []byte(key)
	var (
		vt     C.int
		num    C.double
		errmsg *C.char
		out    *C.uchar
		buf    [512]byte
	)
	n := C.size_t(len(buf))
	bufPtr := (*C.char)(unsafe.Pointer(&buf[0]))
	rc := C.amesh_get(z.f.get, z.ptr, cbuf(kb), C.size_t(len(kb)), &vt, bufPtr, &n, &num, &errmsg, &out)
	data := bufPtr
	if out != nil { // the module allocated a buffer for a value longer than buf
		defer C.amesh_free(unsafe.Pointer(out))
		data = (*C.char)(unsafe.Pointer(out))
	}
	if rc == rcDeclined || (rc == rcOK && vt == typeNil) {
		return "", false, nil
	}
	if rc != rcOK {
		return "", false, storeErr("get", key, rc, errmsg)
	}
	switch vt {
	case typeString:
		if n == 0 {
			return "", true, nil
		}
		return C.GoStringN(data, C.int(n)), true, nil
	case typeNumber:
		return strconv.FormatFloat(float64(num), 'f', -1, 64), true, nil
	}
	return "", false, fmt.Errorf("shdict: %q has value type %d", key, vt)
}

// shuttingDown reports whether this nginx process is exiting (a reload or stop sent it
// SIGQUIT/SIGTERM). Its replacement process writes from now on; a write from the
// old one could land after the new one's and leave a stale state visible.
func (z zone) shuttingDown() bool {
	return C.amesh_exiting(z.f.quit, z.f.terminate, z.f.exiting) != 0
}

func (z zone) flushAll() {
	C.amesh_flush_all(z.f.flushAll, z.ptr)
}

func (z zone) capacity() int {
	if z.f.capacity == nil {
		return 0
	}
	return int(C.amesh_capacity(z.f.capacity, z.ptr))
}
