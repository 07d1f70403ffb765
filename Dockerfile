# The service image: the API and the worker (`gradectl serve`, `gradectl worker`). Answers
# never run here: the worker starts one sandbox container per answer through the engine.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
        torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml alembic.ini ./
COPY api api
COPY cli cli
COPY contract contract
COPY core core
COPY db db
COPY graders graders
COPY sandbox sandbox
COPY sandboxed sandboxed
COPY services services
COPY taskbank taskbank
COPY usecases usecases
COPY worker worker
RUN pip install . && useradd --system --uid 10001 grader && mkdir /data && chown grader /data
ENV GRADER_DATA_DIR=/data
EXPOSE 8000
CMD ["gradectl", "serve", "--host", "0.0.0.0"]
