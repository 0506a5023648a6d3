FROM scratch
COPY --from=Builder:latest /out /out
