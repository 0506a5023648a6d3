FROM alpine AS build
FROM scratch AS final
COPY --from=build /out /out
