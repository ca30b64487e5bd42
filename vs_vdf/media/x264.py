"""libx264 options that make an encode repeatable: the same frames give the same bitstream every time.

libx264 picks its assembly kernels from the CPU; its AVX-512 ones read memory they never wrote: the same
24 frames encoded 12 times in one process (CRF 18, one thread, an AVX-512 EPYC) gave 6 different
bitstreams, so the engine's measure of the delivery's error, and with it the output, changed from run to
run. Capped at the x86-64 baseline (SSE2), every encode repeated gave the same bytes, identical to x264's
plain C code, for about 15% more encoding time (24 frames at 360x288: 0.25 -> 0.29 s). Other
architectures keep the encoder's own choice.
"""

from __future__ import annotations

import platform

# The ``x264-params`` value that keeps libx264 off its unrepeatable kernels (None: nothing to add).
REPEATABLE_PARAMS: str | None = "asm=MMX2,SSE,SSE2" if platform.machine().lower() in ("x86_64", "amd64") else None
