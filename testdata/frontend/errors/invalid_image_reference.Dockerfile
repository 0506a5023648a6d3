# VERSION is never given a value, so the image name ends in a bare colon.
ARG VERSION
FROM alpine:${VERSION}
RUN true
