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
from vs_vdf.surrogates import user_files
from vs_vdf.surrogates.chain import Chain
from vs_vdf.surrogates.s3fd import BGR_MEAN


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


def _timed(net, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    def forward():
        with torch.no_grad():
            net(x)

    def backward():
        out = net(x.clone().requires_grad_())
        outputs = [out] if isinstance(out, torch.Tensor) else [t for part in out for t in
                                                                (part if isinstance(part, tuple) else (part,))]
        sum(t.float().sum() for t in outputs).backward()

    return _best_ms(forward, repeats), _best_ms(backward, repeats)


def _user_model_rows(frames: torch.Tensor, args) -> list[tuple]:
    """The attackers' own models the user added (`vdf models add`), on their own input sizes: S3FD on the
    whole frame, FAN on a 256 x 256 crop, BiSeNet at 512 x 512. Absent ones are named, not timed."""
    inputs = {"s3fd": lambda: frames.flip(1) * 255 - torch.tensor(BGR_MEAN, device=frames.device).view(1, 3, 1, 1),
              "fan2d": lambda: F.interpolate(frames, size=(256, 256), mode="bilinear"),
              "bisenet": lambda: F.interpolate(frames, size=(512, 512), mode="bilinear")}
    rows = []
    for kind, make in inputs.items():
        if kind not in user_files.present():
            print(f"{kind}: not added (`vdf models add FILE`), not timed")
            continue
        x = make().contiguous()
        rows.append((f"{kind} .net (user file)", tuple(x.shape[1:]), *_timed(surrogates.load(kind, args.device).net, x,
                                                                             args.repeats)))
    return rows


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
        rows.append((f"{name} .net", tuple(x.shape[1:]), *_timed(net, x, args.repeats)))
    rows += _user_model_rows(frames, args)

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
