"""_accel — finds the compiled fast path (pagedkv._fastpath, built by
`make` from _fastpath.c) that pagedkv.vllm.KVCacheManager uses for its decode
step.  Without it the package works (the same protocol in Python, about half
the speed) and says so once on stderr at import; PAGEDKV_FASTPATH=0 chooses
the Python path on purpose (no warning)."""
import os
import sys

FAST = None
REASON = None

if os.environ.get("PAGEDKV_FASTPATH", "1") == "0":
    REASON = "disabled by PAGEDKV_FASTPATH=0"
else:
    try:
        from . import _fastpath as FAST
    except ImportError as e:
        REASON = "compiled module pagedkv._fastpath not loadable (%s)" % e
        sys.stderr.write("pagedkv: warning: %s; the vLLM KVCacheManager runs its "
                         "slower pure-Python decode path (build the module with "
                         "`make`)\n" % REASON)
