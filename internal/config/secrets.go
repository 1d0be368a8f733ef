package config

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
)

// secretFromFile completes a secret that may be given directly in name or, the way
// container platforms mount secrets, as a file named in name_FILE. The file is read
// once, here, at start. A trailing line break is not part of the secret: editors and
// `echo` add one.
func (c *checks) secretFromFile(name string, value *string, file string) {
	fileVar := name + "_FILE"
	if file == "" {
		return
	}
	if *value != "" {
		c.add(false, fileVar, "is set, and so is %s: set one of them", name)
		return
	}
	data, err := os.ReadFile(file)
	if err != nil {
		// The error names the path, never the content.
		c.add(false, fileVar, "cannot read the secret: %v", err)
		return
	}
	secret := strings.TrimRight(string(data), "\r\n")
	c.add(secret != "", fileVar, "%s is empty", file)
	*value = secret
}

// certificates reads a PEM file that must hold at least one certificate, such as a
// CA to trust, and returns its content.
func (c *checks) certificates(name, file string) []byte {
	if file == "" {
		return nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		c.add(false, name, "cannot read the certificate: %v", err)
		return nil
	}
	c.add(x509.NewCertPool().AppendCertsFromPEM(data), name, "%s holds no PEM certificate", file)
	return data
}

// keyPair checks that a certificate and its private key are both given, or neither,
// and that they load and belong together.
func (c *checks) keyPair(certName, certFile, keyName, keyFile string) {
	c.add(keyFile != "" || certFile == "", keyName, "is required with %s", certName)
	c.add(certFile != "" || keyFile == "", certName, "is required with %s", keyName)
	if certFile == "" || keyFile == "" {
		return
	}
	_, err := tls.LoadX509KeyPair(certFile, keyFile)
	c.add(err == nil, certName, "%s with %s %s: %v", certFile, keyName, keyFile, err)
}

// readable checks that a file exists and this process may read it, for files that a
// library reads itself when it connects.
func (c *checks) readable(name, file string) {
	if file == "" {
		return
	}
	f, err := os.Open(file)
	if err != nil {
		c.add(false, name, "cannot read the file: %v", err)
		return
	}
	f.Close()
}
