#!/usr/bin/env bash
# The full-size GPU check in one call (bench/device_check.py: SD-1.5-shaped InstructPix2Pix with
# architecture-identical random weights; prediction fp16/bf16/channels-last/compile/4 candidates, the fp16
# non-finite guard, one training step under accelerate bf16). Prints one markdown table.
#
#   bash bench/device_check.sh --prepare-wheels   # here, with a package registry: fills bench/wheels/ (git-ignored)
#   bash bench/device_check.sh                    # on the GPU machine, from the repository root; bench/wheels/ along
#   bash bench/device_check.sh --tiny             # anywhere, CPU, the narrow model (what the test suite runs)
#
# The GPU machine has Python 3.12 with torch, transformers, accelerate and safetensors but no diffusers and no
# network: every module below that its Python cannot import is installed from bench/wheels/ (no index, no deps)
# into bench/.device-site/, which goes first on PYTHONPATH. Other arguments go to bench/device_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=bench/wheels
SITE=bench/.device-site
# module  wheel (pip name==version; the versions of requirements.txt where they fit the 64 MiB a device run carries:
# opencv 4.10 is 50 MB where 5.0 is 57 MB, and only cv2.resize is used)
PACKAGES="diffusers:diffusers==0.42.1
cv2:opencv-python-headless==4.10.0.84
PIL:pillow==13.0.0
importlib_metadata:importlib_metadata==10.2.0
lazy_importer:lazy-importer==0.1.0
zipp:zipp==4.1.2
huggingface_hub:huggingface_hub==2.4.0"

if [[ "${1:-}" == "--prepare-wheels" ]]; then
    mkdir -p "$WHEELS"
    # shellcheck disable=SC2046
    "$PYTHON" -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --no-deps -d "$WHEELS" \
        $(echo "$PACKAGES" | cut -d: -f2)
    du -sh "$WHEELS"
    exit 0
fi

missing=()
while IFS=: read -r module requirement; do
    if ! PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c "import $module" 2>/dev/null; then
        missing+=("$requirement")
    fi
done <<< "$PACKAGES"
if (( ${#missing[@]} )); then
    if [[ ! -d "$WHEELS" ]]; then
        echo "device_check: $PYTHON cannot import ${missing[*]} and $WHEELS/ does not exist;" \
             "run 'bash bench/device_check.sh --prepare-wheels' on a machine with a package registry first" >&2
        exit 2
    fi
    echo "device_check: installing ${missing[*]} from $WHEELS/ into $SITE/" >&2
    "$PYTHON" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" --target "$SITE" "${missing[@]}"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import torch, transformers, accelerate, diffusers, huggingface_hub as h;
print(f'device_check: python {__import__(\"sys\").version.split()[0]}, torch {torch.__version__}, transformers '
      f'{transformers.__version__}, accelerate {accelerate.__version__}, diffusers {diffusers.__version__}, '
      f'huggingface_hub {h.__version__}, CUDA {torch.cuda.is_available()}')" >&2
exec "$PYTHON" bench/device_check.py "$@"
