# only arguments here
ARG VERSION=1
