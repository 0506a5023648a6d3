FROM alpine AS build
FROM scratch
COPY --from=5 /out /out
