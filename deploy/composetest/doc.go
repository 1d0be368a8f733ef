// Package composetest runs docker-compose.yml for real on a Docker engine and
// checks what operators rely on: health, data in and out, restarts, volumes,
// stopping, non-root users, and the backend's certificate cache. Its test needs a
// Docker engine with compose and the images (make images), so it is behind the
// build tag "compose": run it with `make compose-test`.
package composetest
