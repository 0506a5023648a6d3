FROM alpine AS build
RUN make
FROM debian AS Build
