/* A VapourSynth host with no Python in the process: it calls vdf.Protect on a blank clip and
 * prints the error it gets back (the test expects a clear message, not a crash). */
#include <stdio.h>

#include "VapourSynth4.h"

int main(void) {
    const VSAPI *vsapi = getVapourSynthAPI(VAPOURSYNTH_API_VERSION);
    if (!vsapi) {
        puts("no VapourSynth API");
        return 2;
    }
    VSCore *core = vsapi->createCore(0);
    VSPlugin *vdf = vsapi->getPluginByNamespace("vdf", core);
    VSPlugin *std = vsapi->getPluginByNamespace("std", core);
    if (!vdf || !std) {
        puts("vdf plugin not loaded");
        return 3;
    }
    VSMap *blank_args = vsapi->createMap();
    vsapi->mapSetInt(blank_args, "width", 64, maReplace);
    vsapi->mapSetInt(blank_args, "height", 64, maReplace);
    VSMap *blank = vsapi->invoke(std, "BlankClip", blank_args);
    VSMap *args = vsapi->createMap();
    vsapi->mapConsumeNode(args, "clip", vsapi->mapGetNode(blank, "clip", 0, NULL), maReplace);
    VSMap *result = vsapi->invoke(vdf, "Protect", args);
    const char *error = vsapi->mapGetError(result);
    printf("%s\n", error ? error : "no error");
    vsapi->freeMap(result);
    vsapi->freeMap(args);
    vsapi->freeMap(blank);
    vsapi->freeMap(blank_args);
    vsapi->freeCore(core);
    return error ? 0 : 1;
}
