#!/bin/sh
# Publishes hypersd-worker and the hypersd CLI into one folder (they share every dependency) for the images in
# docker/worker.Dockerfile. Usage: publish.sh <cpu|cuda> <output folder>
#   cpu:  TorchSharp-cpu, with its LibTorch (CPU) in the output.
#   cuda: TorchSharp alone (managed code and its native glue libLibTorchSharp.so); the image brings LibTorch with CUDA.
set -eu
backend=${1:?usage: publish.sh <cpu|cuda> <output folder>}
out=${2:?usage: publish.sh <cpu|cuda> <output folder>}
for project in src/HyperSd.WorkerHost/HyperSd.WorkerHost.csproj src/HyperSd.Cli/HyperSd.Cli.csproj; do
  dotnet publish "$project" -c Release -r linux-x64 --self-contained false -p:TorchBackend="$backend" -o "$out"
done
