"""Time each surrogate and the whole acquisition chain on the CPU (or --device), forward and forward+backward.

Input: real frames of franck.mp4 (360 x 288), batch --batch. Each model is timed on its own input
(the network input size; the chain on whole frames). Prints a Markdown table of milliseconds per frame.
usage: .venv/bin/python scripts/bench_surrogates.py [--batch 8] [--repeats 3] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vs_vdf import samples, surrogates
from vs_vdf.surrogates.chain import Chain


def _best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def _net_input(name: str, net, frames: torch.Tensor) -> torch.Tensor:
    if name.startswith("faceapi68"):
        return F.interpolate(frames, size=(112, 112), mode="bilinear", antialias=True).permute(0, 2, 3, 1) * 255
    _, height, width, _ = net.input_shape
    pixels = F.interpolate(frames, size=(height, width), mode="bilinear", antialias=True).permute(0, 2, 3, 1)
    return pixels * 2 - 1 if name.startswith("blazeface") else pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = samples.read_frames("franck", args.batch).to(args.device)
    rows = []
    for name in ("blazeface_short", "blazeface_full", "blazeface_back", "facemesh", "facemesh_v1", "iris",
                 "selfie_segmentation", "faceapi68", "faceapi68_tiny"):
        net = surrogates.load(name, args.device).net
        x = _net_input(name, net, frames).contiguous()

        def forward():
            with torch.no_grad():
                net(x)

        def backward():
            xg = x.clone().requires_grad_()
            out = net(xg)
            sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,))).backward()

        rows.append((f"{name} .net", tuple(x.shape[1:]), _best_ms(forward, args.repeats), _best_ms(backward, args.repeats)))

    chain = Chain(device=args.device)

    def chain_forward():
        with torch.no_grad():
            chain(frames)

    def chain_backward():
        xg = frames.clone().requires_grad_()
        a = chain(xg)
        (a.facemesh[..., :2].sum() + a.pose["angles"].sum() + a.faceapi68.sum() + a.person.sum()
         + chain.models["blazeface_short"].scores(xg).sum()).backward()

    rows.append(("chain (detect, FaceMesh, pose, faceapi68, MTCNN, selfie)", tuple(frames.shape[1:]),
                 _best_ms(chain_forward, args.repeats), _best_ms(chain_backward, args.repeats)))
    print(f"device {args.device}, {args.threads} threads, batch {args.batch}; ms per frame (best of {args.repeats})\n")
    print("| model | input per frame | forward | forward+backward |\n|---|---|---|---|")
    for name, shape, fwd, bwd in rows:
        print(f"| {name} | {' x '.join(map(str, shape))} | {fwd / args.batch:.1f} | {bwd / args.batch:.1f} |")


if __name__ == "__main__":
    main()
