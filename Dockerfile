# lorasweep on a CUDA machine: docker build -t lorasweep . && docker run --gpus all lorasweep run
# PyPI's Linux torch wheels carry their CUDA libraries; the host needs only the NVIDIA driver.
FROM python:3.11-slim
WORKDIR /opt/lorasweep
COPY . .
RUN bash scripts/install.sh && rm -rf /root/.cache/pip
WORKDIR /work
ENTRYPOINT ["lorasweep"]
CMD ["--help"]
