FROM scratch
RUN echo ok \
    && [ "unterminated
COPY <<EOF /x
no end
