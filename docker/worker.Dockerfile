# syntax=docker/dockerfile:1
# hypersd-worker, with the hypersd CLI beside it, in two variants (build targets), from the repository root:
#   docker build -f docker/worker.Dockerfile --target cpu  -t hypersd-worker:cpu  .
#   docker build -f docker/worker.Dockerfile --target cuda -t hypersd-worker:cuda .
# Configuration comes from environment variables (HyperSd__Roles, HyperSd__RabbitMq, HyperSd__Store__Provider,
# HyperSd__Store__ConnectionString, ...: src/HyperSd.Services/Hosting/WorkerOptions.cs); secrets are passed in at run
# time, never baked in.
#
# Base: the .NET images on Ubuntu 24.04 (noble). TorchSharp 0.107's native glue (libLibTorchSharp.so) asks for
# GLIBCXX_3.4.32, which noble's libstdc++ (GCC 14) has. Debian 12's stops at 3.4.30; there the build marks that one
# version need weak (build/PatchLibTorchSharp.cs, after build and publish: the one symbol bound to it is never called),
# which is how the repository builds and runs on Debian 12 hosts. On noble the patch finds nothing to do.
ARG DOTNET_VERSION=10.0

FROM mcr.microsoft.com/dotnet/sdk:${DOTNET_VERSION}-noble AS source
WORKDIR /src
COPY Directory.Build.props Directory.Build.targets Directory.Packages.props ./
COPY build/ build/
COPY migrations/ migrations/
COPY recipes/ recipes/
COPY src/ src/
COPY docker/publish.sh docker/

FROM source AS publish-cpu
RUN sh docker/publish.sh cpu /app

FROM source AS publish-cuda
RUN sh docker/publish.sh cuda /app

# LibTorch with CUDA for the cuda variant: PyTorch's pip wheel (its torch/lib) with the NVIDIA runtime wheels it depends
# on (cuBLAS, cuDNN, NCCL, ...), not a LibTorch CUDA zip, and not TorchSharp-cuda (not on the registries our machines
# reach). Why the wheel: its LibTorch is the one seen working with TorchSharp 0.107's glue on an H100/H200 machine (no
# undefined symbol; CUDA matmul, convolutions and bf16 attention ran), and it pins matching CUDA libraries in one step.
# TORCH_VERSION matches the LibTorch TorchSharp 0.107 is built against (2.10.0; 2.11 with CUDA 13 was seen working
# too). PyPI's Linux x86_64 torch wheels are CUDA builds; for another CUDA version pass PyTorch's index for it as
# --build-arg PIP_INDEX_URL=... The nodes need an NVIDIA driver new enough for that CUDA. Python is needed here only:
# the image takes the shared libraries, in the wheel's layout so their RPATHs ($ORIGIN/../../nvidia/*/lib) resolve.
FROM python:3.12-slim-bookworm AS libtorch-cuda
ARG TORCH_VERSION=2.10.0
ARG PIP_INDEX_URL=https://pypi.org/simple
RUN pip install --no-cache-dir --target /opt/wheel "torch==${TORCH_VERSION}" \
 && mkdir -p /opt/libtorch/torch \
 && cp -a /opt/wheel/torch/lib /opt/libtorch/torch/lib \
 && cp -a /opt/wheel/nvidia /opt/libtorch/nvidia

FROM mcr.microsoft.com/dotnet/runtime:${DOTNET_VERSION}-noble AS runtime
COPY docker/hypersd-worker-healthy /usr/local/bin/hypersd-worker-healthy
# the recipes, for `hypersd runs submit /app/recipes/toy.yaml`
COPY recipes/ /app/recipes/
# the artifact store: mount the volume every worker shares here
RUN chmod 0755 /usr/local/bin/hypersd-worker-healthy && mkdir -p /data/artifacts && chown "$APP_UID" /data/artifacts
# DOTNET_GCgen0size: a 256 MB gen-0 budget, as the tests and the dotnet-run profiles use (fewer collections, fewer
# chances for TorchSharp's implicit-scalar race; docs/architecture.md, "Known issue: TorchSharp's implicit scalars").
# MALLOC_ARENA_MAX=1: every thread on glibc's main heap, which NativeAllocator keeps (CPU tensor work 2-3x faster on the
# worker's threads; docs/architecture.md, "The native allocator").
# Recipes and jobs may name files only under the models and datasets mounts (Compose and the gpu overlay mount them).
ENV PATH=/app:$PATH \
    DOTNET_GCgen0size=0x10000000 \
    MALLOC_ARENA_MAX=1 \
    HyperSd__Transport=rabbitmq \
    HyperSd__ArtifactRoot=/data/artifacts \
    HyperSd__ModelsRoot=/data/models \
    HyperSd__DataRoot=/data/datasets \
    HyperSd__HealthFile=/tmp/hypersd-worker.healthy
WORKDIR /app
# the non-root user of the .NET images (UID 1654)
USER $APP_UID
HEALTHCHECK --interval=30s --timeout=5s --start-period=2m --retries=3 CMD ["hypersd-worker-healthy"]
ENTRYPOINT ["hypersd-worker"]

FROM runtime AS cuda
COPY --from=libtorch-cuda /opt/libtorch /opt/libtorch
COPY --from=publish-cuda /app /app
ENV HyperSd__Devices=cuda:0 \
    LD_LIBRARY_PATH=/opt/libtorch/torch/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM runtime AS cpu
COPY --from=publish-cpu /app /app
ENV HyperSd__Devices=cpu
