// Package composetest runs docker-compose.yml for real on a Docker engine and
// checks what operators rely on: health, data in and out, restarts, volumes,
// stopping, non-root users, and the backend's certificate cache; then the secured
// variant, docker-compose.prod.yml, from nothing: certificates, the users of
// deploy/elasticsearch-security.json, data over TLS, and each user refused what
// its role does not grant. Its test needs a Docker engine with compose and the
// images (make images), so it is behind the build tag "compose": run it with
// `make compose-test`.
package composetest
