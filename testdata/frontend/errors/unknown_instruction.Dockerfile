FROM alpine
FORM debian
