#!/usr/bin/env bash
# Builds the algorithm image and runs it on test/input with the grand-challenge flags, then checks the
# output against test/expected_output (present, PET geometry, uint8 0/1, and every voxel whose fp32 probability
# is further than 0.05 from the threshold as in the fp32 mask: any precision passes, a wrong mask fails).
#
#   ./test.sh                 # docker (CONTAINER_ENGINE=podman for podman; BASE_IMAGE=... to change the base)
#   ./test.sh --local         # the same check without a container (python from PYTHON, default python3)
#   PRECISION=bf16 ./test.sh --local    # another precision than auto
#   BACKEND=openvino PRECISION=fp32 ./test.sh --local    # another backend than auto (torch, openvino)
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
PYTHON=${PYTHON:-python3}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/autopet-test-output.XXXXXX")
trap 'rm -rf "$OUT"' EXIT

if [ "${1:-}" = "--local" ]; then
  "$PYTHON" process.py --input test/input --output "$OUT" ${PRECISION:+--precision "$PRECISION"} ${BACKEND:+--backend "$BACKEND"}
  "$PYTHON" test/check_output.py "$OUT" test/expected_output test/input
  exit $?
fi

ENGINE=${CONTAINER_ENGINE:-docker}
IMAGE=${IMAGE:-autopet-wholebody-unet:latest}
BUILD_ARGS=()
[ -n "${BASE_IMAGE:-}" ] && BUILD_ARGS+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
# podman on some hosts reaches the package index only through the host network while building.
[ "$ENGINE" = podman ] && BUILD_ARGS+=(--network host)
"$ENGINE" build "${BUILD_ARGS[@]}" -t "$IMAGE" .

GPU_FLAGS=()
if [ "$ENGINE" = docker ] && docker info 2>/dev/null | grep -qi 'runtimes:.*nvidia'; then
  GPU_FLAGS=(--gpus all)
elif [ "$ENGINE" = podman ] && [ -e /dev/nvidia0 ] && command -v nvidia-ctk >/dev/null; then
  GPU_FLAGS=(--device nvidia.com/gpu=all)
fi
chmod 0777 "$OUT"  # the image runs as a non-root user

"$ENGINE" run --rm "${GPU_FLAGS[@]}" \
  --network none --cap-drop ALL --security-opt no-new-privileges \
  --shm-size 128m --pids-limit 256 --memory 16g --memory-swap 16g \
  -v "$HERE/test/input:/input:ro" -v "$OUT:/output" \
  "$IMAGE"

# The check runs inside the image too, so the host needs nothing but the container engine.
"$ENGINE" run --rm --network none --entrypoint python \
  -v "$HERE/test:/test:ro" -v "$OUT:/output:ro" \
  "$IMAGE" /test/check_output.py /output /test/expected_output /test/input
