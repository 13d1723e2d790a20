/*
 * error.c — the error convention: PKV_ERRNO_MAP codes, their names and
 * messages, and the thread-local detail string of the last failure.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

/* initial-exec: every call clears it, so it must cost a plain TLS store,
 * not a __tls_get_addr call (256 bytes fit glibc's static TLS surplus). */
static _Thread_local char last_error[256]
    __attribute__((tls_model("initial-exec")));

const char *pkv_strerror(int err) {
  switch (err) {
  case 0: return "success";
#define PKV__ERR_MSG(name, value, msg) case value: return msg;
    PKV_ERRNO_MAP(PKV__ERR_MSG)
#undef PKV__ERR_MSG
  default: return "unknown error";
  }
}

const char *pkv_err_name(int err) {
  switch (err) {
  case 0: return "PKV_OK";
#define PKV__ERR_NAME(name, value, msg) case value: return "PKV_" #name;
    PKV_ERRNO_MAP(PKV__ERR_NAME)
#undef PKV__ERR_NAME
  default: return "PKV_E?";
  }
}

const char *pkv_last_error(void) { return last_error; }

void pkv__err_clear(void) { last_error[0] = '\0'; }

int pkv__err(int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return err;
}
