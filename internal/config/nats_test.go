package config

import (
	"path/filepath"
	"reflect"
	"testing"
)

func TestNATSSecretsCanComeFromFiles(t *testing.T) {
	dir := t.TempDir()
	cfg, err := LoadNATS(env(map[string]string{"NATS_USER": "ingest", "NATS_PASSWORD_FILE": writeFile(t, dir, "pw", "pa55word\r\n")}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.User != "ingest" || cfg.Password != "pa55word" {
		t.Errorf("user, password = %q, %q; want ingest, pa55word", cfg.User, cfg.Password)
	}
	cfg, err = LoadNATS(env(map[string]string{"NATS_TOKEN_FILE": writeFile(t, dir, "token", "t0ken\n")}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Token != "t0ken" {
		t.Errorf("token = %q, want t0ken", cfg.Token)
	}
}

func TestNATSConnectionSettingsAreValidatedTogether(t *testing.T) {
	dir := t.TempDir()
	creds := writeFile(t, dir, "app.creds", "-----BEGIN NATS USER JWT-----\n...")
	seed := writeFile(t, dir, "seed.nk", "SUA...")
	ca := writeFile(t, dir, "ca.pem", string(selfSignedPEM(t)))
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name      string
		vars      map[string]string
		wantNamed []string // variables the error must name; none means valid
	}{
		{"defaults", nil, nil},
		{"a cluster with a .creds file and a CA", map[string]string{"NATS_URL": "tls://n1:4222,tls://n2:4222", "NATS_CREDS": creds, "NATS_CA_CERT": ca}, nil},
		{"an NKey seed", map[string]string{"NATS_NKEY_SEED": seed}, nil},
		{"user and password", map[string]string{"NATS_USER": "u", "NATS_PASSWORD": "p"}, nil},
		{"a token", map[string]string{"NATS_TOKEN": "t"}, nil},
		{"two methods", map[string]string{"NATS_CREDS": creds, "NATS_TOKEN": "t"}, []string{"NATS_TOKEN"}},
		{"user without password", map[string]string{"NATS_USER": "u"}, []string{"NATS_PASSWORD"}},
		{"password without user", map[string]string{"NATS_PASSWORD": "p"}, []string{"NATS_USER"}},
		{"a .creds file that is not there", map[string]string{"NATS_CREDS": missing}, []string{"NATS_CREDS"}},
		{"a seed file that is not there", map[string]string{"NATS_NKEY_SEED": missing}, []string{"NATS_NKEY_SEED"}},
		{"a client certificate without its key", map[string]string{"NATS_TLS_CERT": ca}, []string{"NATS_TLS_KEY"}},
		{"a key without its certificate", map[string]string{"NATS_TLS_KEY": seed}, []string{"NATS_TLS_CERT"}},
		{"a certificate and key that do not load", map[string]string{"NATS_TLS_CERT": ca, "NATS_TLS_KEY": seed}, []string{"NATS_TLS_CERT"}},
		{"a CA file that is not there", map[string]string{"NATS_CA_CERT": missing}, []string{"NATS_CA_CERT"}},
		{"an HTTP address", map[string]string{"NATS_URL": "http://n1:4222"}, []string{"NATS_URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadNATS(env(tt.vars))
			checkNamed(t, "LoadNATS", tt.vars, err, tt.wantNamed)
		})
	}
}

func TestWebserverAndPublisherReadTheSameNATSVariables(t *testing.T) {
	publisher := Names(NATSVars(&NATS{}))
	webserver := Names(IngesterVars(&Ingester{}))
	if got := webserver[:len(publisher)]; !reflect.DeepEqual(got, publisher) {
		t.Errorf("the webserver's first variables are %v, want the NATS connection's %v", got, publisher)
	}
}
