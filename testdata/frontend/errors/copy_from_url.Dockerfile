# COPY cannot download; the URL may come from a variable.
FROM scratch
ARG SRC=https://example.com/tool.tgz
COPY ${SRC} /opt/
