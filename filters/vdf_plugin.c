/*
 * The `vdf` VapourSynth namespace: a native shim that forwards each call to the Python
 * implementation (vs_vdf.plugin_bridge), so a .vpy can call core.vdf.Protect(clip) with no import.
 *
 * VapourSynth only loads native plugins. This library registers the public functions with their
 * argument types (VapourSynth validates them), and on a call it runs a line of Python in the
 * interpreter that already runs the script. The Python C API is looked up at run time, so a host
 * without Python loads the plugin and gets a clear error from each call instead of a crash.
 *
 * Two helper functions carry the call across: BridgeArguments(id) hands the call's arguments to
 * Python as an ordinary VapourSynth call result, and BridgeReturn(id, clip | error) hands the
 * outcome back. They are only meaningful while a call is in flight.
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "VapourSynth4.h"

#define SLOTS 64

typedef struct {
    int64_t id;       /* 0: free */
    const VSMap *in;  /* the caller's arguments */
    VSMap *out;       /* where the result or the error goes */
    int answered;
} Call;

static Call calls[SLOTS];
static int64_t last_id;
static pthread_mutex_t calls_lock = PTHREAD_MUTEX_INITIALIZER;

typedef int (*IsInitialized)(void);
typedef int (*GilEnsure)(void);
typedef void (*GilRelease)(int);
typedef int (*RunString)(const char *);

static void *python_symbol(const char *name) {
    void *symbol = dlsym(RTLD_DEFAULT, name);
    static const char *libraries[] = {"libpython3.15.so.1.0", "libpython3.14.so.1.0", "libpython3.13.so.1.0",
                                      "libpython3.12.so.1.0", NULL};
    for (const char **library = libraries; !symbol && *library; library++) {
        void *handle = dlopen(*library, RTLD_LAZY | RTLD_NOLOAD);
        if (handle)
            symbol = dlsym(handle, name);
    }
    return symbol;
}

static Call *find_call(int64_t id) {
    for (int i = 0; i < SLOTS; i++)
        if (calls[i].id == id)
            return &calls[i];
    return NULL;
}

/* Protect (and any other forwarded function): userData is the Python function's name. */
static void VS_CC forward(const VSMap *in, VSMap *out, void *userData, VSCore *core, const VSAPI *vsapi) {
    const char *function = (const char *)userData;
    char message[512];
    IsInitialized is_initialized = (IsInitialized)python_symbol("Py_IsInitialized");
    GilEnsure gil_ensure = (GilEnsure)python_symbol("PyGILState_Ensure");
    GilRelease gil_release = (GilRelease)python_symbol("PyGILState_Release");
    RunString run_string = (RunString)python_symbol("PyRun_SimpleString");
    if (!is_initialized || !gil_ensure || !gil_release || !run_string || !is_initialized()) {
        snprintf(message, sizeof message, "vdf.%s: this host has no Python interpreter; vdf runs in the Python "
                 "that runs VapourSynth scripts (vspipe, vsscript, a Python program)", function);
        vsapi->mapSetError(out, message);
        return;
    }
    pthread_mutex_lock(&calls_lock);
    Call *call = find_call(0);
    int64_t id = ++last_id;
    if (call)
        *call = (Call){id, in, out, 0};
    pthread_mutex_unlock(&calls_lock);
    if (!call) {
        snprintf(message, sizeof message, "vdf.%s: too many calls in flight", function);
        vsapi->mapSetError(out, message);
        return;
    }
    char code[256];
    snprintf(code, sizeof code, "__import__('vs_vdf.plugin_bridge', fromlist=['call']).call(%" PRId64 ", '%s')",
             id, function);
    int state = gil_ensure();
    int failed = run_string(code);
    gil_release(state);
    pthread_mutex_lock(&calls_lock);
    int answered = call->answered;
    call->id = 0;
    pthread_mutex_unlock(&calls_lock);
    if (failed || !answered) {
        snprintf(message, sizeof message, "vdf.%s: the Python side (vs_vdf.plugin_bridge) could not run; is vs-vdf "
                 "installed in the Python that runs this script? (details on stderr)", function);
        vsapi->mapSetError(out, message);
    }
}

static void VS_CC bridge_arguments(const VSMap *in, VSMap *out, void *userData, VSCore *core, const VSAPI *vsapi) {
    int64_t id = vsapi->mapGetInt(in, "id", 0, NULL);
    pthread_mutex_lock(&calls_lock);
    Call *call = id ? find_call(id) : NULL;
    if (call)
        vsapi->copyMap(call->in, out);
    else
        vsapi->mapSetError(out, "vdf.BridgeArguments: no such call in flight");
    pthread_mutex_unlock(&calls_lock);
}

static void VS_CC bridge_return(const VSMap *in, VSMap *out, void *userData, VSCore *core, const VSAPI *vsapi) {
    int64_t id = vsapi->mapGetInt(in, "id", 0, NULL);
    int missing = 0;
    const char *error = vsapi->mapGetData(in, "error", 0, &missing);
    pthread_mutex_lock(&calls_lock);
    Call *call = id ? find_call(id) : NULL;
    if (!call) {
        vsapi->mapSetError(out, "vdf.BridgeReturn: no such call in flight");
    } else if (!missing) {
        vsapi->mapSetError(call->out, error);
        call->answered = 1;
    } else {
        VSNode *node = vsapi->mapGetNode(in, "clip", 0, &missing);
        if (missing)
            vsapi->mapSetError(call->out, "vdf: the Python side returned neither a clip nor an error");
        else
            vsapi->mapConsumeNode(call->out, "clip", node, maReplace);
        call->answered = 1;
    }
    pthread_mutex_unlock(&calls_lock);
}

VS_EXTERNAL_API(void) VapourSynthPluginInit2(VSPlugin *plugin, const VSPLUGINAPI *vspapi) {
    vspapi->configPlugin("org.vs-vdf.vdf", "vdf", "vs-vdf: protect faces against 3D talking-face cloning",
                         VS_MAKE_VERSION(0, 1), VAPOURSYNTH_API_VERSION, 0, plugin);
    vspapi->registerFunction("Protect",
                             "clip:vnode;preset:data:opt;targets:data:opt;epsilon:float:opt;device:data:opt;"
                             "seed:int:opt;method:data:opt;chunk:int:opt;cache_chunks:int:opt;"
                             "checkpoint:data:opt;similarity:float:opt;max_steps:int:opt;threads:int:opt;",
                             "clip:vnode;", forward, (void *)"Protect", plugin);
    vspapi->registerFunction("BridgeArguments", "id:int;", "any", bridge_arguments, NULL, plugin);
    vspapi->registerFunction("BridgeReturn", "id:int;clip:vnode:opt;error:data:opt;", "", bridge_return, NULL, plugin);
}
