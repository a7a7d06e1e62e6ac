# The registry service image (API and workers share it).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY sdk ./sdk
COPY registry_service ./registry_service
COPY migrations ./migrations
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -e ".[server]"
EXPOSE 8000
CMD ["adapter-registry", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
