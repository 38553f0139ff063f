package jetstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/shardpool/gateway/internal/natstest"
)

// connectWith connects through Connect with a's options and reports the
// outcome; a wrong credential must fail, not hang (no retry on the first
// connect here).
func connectWith(t *testing.T, url string, a Auth) error {
	t.Helper()
	opts, err := a.Options()
	if err != nil {
		return err
	}
	opts = append(opts, nats.RetryOnFailedConnect(false), nats.MaxReconnects(0), nats.Timeout(3*time.Second))
	nc, err := Connect(url, "auth-test", nil, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	if !nc.IsConnected() {
		return nats.ErrNoServers
	}
	return nc.Flush()
}

func write(t *testing.T, name string, b []byte) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUserPasswordAndToken(t *testing.T) {
	s := natstest.Run(t, natstest.WithoutJetStream(), natstest.WithOptions(func(o *server.Options) { o.Username, o.Password = "gw", "hunter2" }))
	if err := connectWith(t, s.ClientURL(), Auth{User: "gw", Password: "hunter2"}); err != nil {
		t.Fatalf("right password refused: %v", err)
	}
	err := connectWith(t, s.ClientURL(), Auth{User: "gw", Password: "wrong"})
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	if strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the password: %v", err)
	}
	ts := natstest.Run(t, natstest.WithoutJetStream(), natstest.WithOptions(func(o *server.Options) { o.Authorization = "s3cr3t-token" }))
	if err := connectWith(t, ts.ClientURL(), Auth{Token: "s3cr3t-token"}); err != nil {
		t.Fatalf("right token refused: %v", err)
	}
	if err := connectWith(t, ts.ClientURL(), Auth{Token: "nope"}); err == nil {
		t.Fatal("wrong token accepted")
	}
}

func TestNkeySeed(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	s := natstest.Run(t, natstest.WithoutJetStream(), natstest.WithOptions(func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} }))
	if err := connectWith(t, s.ClientURL(), Auth{NkeySeedFile: write(t, "user.nk", seed)}); err != nil {
		t.Fatalf("nkey refused: %v", err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	if err := connectWith(t, s.ClientURL(), Auth{NkeySeedFile: write(t, "other.nk", otherSeed)}); err == nil {
		t.Fatal("an unknown nkey was accepted")
	}
	_, err := Auth{NkeySeedFile: write(t, "bad.nk", []byte("not a seed"))}.Options()
	if err == nil || !strings.Contains(err.Error(), "NATS_NKEY_SEED") || strings.Contains(err.Error(), "not a seed") {
		t.Fatalf("bad seed error %v", err)
	}
}

func TestCredsFile(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.IssuerAccount = apub
	ujwt, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	useed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		t.Fatal(err)
	}
	op, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	resolver.Store(apub, ajwt)
	s := natstest.Run(t, natstest.WithoutJetStream(), natstest.WithOptions(func(o *server.Options) {
		o.TrustedOperators, o.AccountResolver = []*jwt.OperatorClaims{op}, resolver
	}))
	if err := connectWith(t, s.ClientURL(), Auth{CredsFile: write(t, "user.creds", creds)}); err != nil {
		t.Fatalf("creds refused: %v", err)
	}
	if err := connectWith(t, s.ClientURL(), Auth{}); err == nil {
		t.Fatal("no credentials accepted by an operator-mode server")
	}
	if _, err := (Auth{CredsFile: "/nonexistent.creds"}).Options(); err == nil || !strings.Contains(err.Error(), "NATS_CREDS") {
		t.Fatalf("missing creds file error %v", err)
	}
}

func TestTLSWithClientCertificates(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := newCert(t, nil, nil, "test CA", true)
	srvCert, srvKey := newCert(t, caCert, caKey, "127.0.0.1", false)
	cliCert, cliKey := newCert(t, caCert, caKey, "gateway", false)
	caFile := pemFile(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw)
	srvCertFile := pemFile(t, dir, "server.pem", "CERTIFICATE", srvCert.Raw)
	srvKeyFile := keyFile(t, dir, "server.key", srvKey)
	cliCertFile := pemFile(t, dir, "client.pem", "CERTIFICATE", cliCert.Raw)
	cliKeyFile := keyFile(t, dir, "client.key", cliKey)

	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: srvCertFile, KeyFile: srvKeyFile, CaFile: caFile, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	s := natstest.Run(t, natstest.WithoutJetStream(), natstest.WithOptions(func(o *server.Options) {
		o.TLSConfig, o.TLSVerify, o.TLS, o.TLSTimeout = tc, true, true, 3
	}))
	if err := connectWith(t, s.ClientURL(), Auth{TLSCAFile: caFile, TLSCertFile: cliCertFile, TLSKeyFile: cliKeyFile}); err != nil {
		t.Fatalf("mutual TLS refused: %v", err)
	}
	if err := connectWith(t, s.ClientURL(), Auth{TLSCAFile: caFile}); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	if err := connectWith(t, s.ClientURL(), Auth{}); err == nil {
		t.Fatal("a client that does not trust the CA connected")
	}
	if _, err := (Auth{TLSCertFile: cliCertFile}).Options(); err == nil || !strings.Contains(err.Error(), "NATS_TLS_KEY") {
		t.Fatalf("cert without key: %v", err)
	}
}

func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, ca bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func pemFile(t *testing.T, dir, name, typ string, der []byte) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func keyFile(t *testing.T, dir, name string, key *ecdsa.PrivateKey) string {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemFile(t, dir, name, "EC PRIVATE KEY", der)
}
