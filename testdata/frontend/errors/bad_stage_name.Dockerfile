FROM alpine AS 1build
RUN make
