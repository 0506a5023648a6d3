FROM alpine AS a
COPY --from=b /b /b
FROM alpine AS b
COPY --from=a /a /a
FROM scratch
