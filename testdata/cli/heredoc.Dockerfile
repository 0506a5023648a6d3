# syntax=docker/dockerfile:1
FROM scratch AS base
COPY <<EOF /etc/motd
hello $USER
EOF
RUN <<-'SCRIPT' sh
	echo "no $expansion here"
SCRIPT
