# The grand-challenge algorithm image. The default base is a CUDA 12.4 PyTorch runtime: its kernels cover
# sm_75, the T4 of the grand-challenge platform. Override with --build-arg BASE_IMAGE=... (test.sh does).
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib

RUN groupadd --system --gid 1001 user && useradd --system --create-home --no-log-init --uid 1001 --gid 1001 user

WORKDIR /opt/app
COPY requirements.txt /opt/app/
RUN python -m pip install --no-cache-dir -r requirements.txt

COPY model/ /opt/app/model/
COPY studies/ /opt/app/studies/
COPY results/ /opt/app/results/
COPY runner/ /opt/app/runner/
COPY weights/ /opt/app/weights/
COPY process.py /opt/app/

# A CPU run takes OpenVINO (requirements.txt; model/openvino_backend.py): the shipped weights are converted once
# here, into a cache the runs read (a run whose entry is missing converts in memory: this folder is not theirs).
ENV AUTOPET_CACHE_DIR=/opt/app/cache
RUN python -m model.openvino_backend /opt/app/weights

USER 1001:1001
ENTRYPOINT ["python", "-u", "/opt/app/process.py"]
