# The heredoc Dockerfile for a front end without heredocs: the same steps on one line each.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /out && echo "line one" > /out/script.txt && echo "line two" >> /out/script.txt
RUN echo "from stdin" > /out/stdin.txt
CMD ["cat", "/out/script.txt", "/out/stdin.txt"]
