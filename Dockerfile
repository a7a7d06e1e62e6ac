# The registry service image (API and workers share it): the package installed as a wheel would be,
# migrations included. Settings come from the environment (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sdk ./sdk
COPY registry_service ./registry_service
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir ".[server]" \
 && rm -rf /src
WORKDIR /data
ENV ADAPTER_REGISTRY_HOST=0.0.0.0 ADAPTER_REGISTRY_DATA_DIR=/data
EXPOSE 8000
CMD ["adapter-registry", "serve"]
