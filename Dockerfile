FROM python:3.11-slim
# For CUDA wheels, torch comes from PyPI's default Linux build (it bundles the CUDA libraries); the host's NVIDIA container toolkit supplies the driver.
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
ENV HF_HUB_OFFLINE=1
CMD ["tunefleet", "--help"]
