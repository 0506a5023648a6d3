FROM alpine AS app
COPY --from=assets /x /x
FROM alpine AS assets
