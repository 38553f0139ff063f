package jetstream

import (
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
)

// Auth holds the NATS credentials and TLS settings (NATS_CREDS,
// NATS_NKEY_SEED, NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_TLS_CA,
// NATS_TLS_CERT/NATS_TLS_KEY). Paths name files; the files' contents and
// the password and token never reach a log line or an error.
type Auth struct {
	CredsFile    string // a .creds file: user JWT and nkey seed (decentralized auth)
	NkeySeedFile string // a file holding a user nkey seed (SU...)
	User         string
	Password     string
	Token        string
	TLSCAFile    string // CA bundle to verify the server (enables TLS)
	TLSCertFile  string // client certificate, for servers that verify clients
	TLSKeyFile   string
}

// Options returns the nats.Options for a, or an error naming the setting
// that is wrong.
func (a Auth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	methods := 0
	if a.CredsFile != "" {
		if err := readable(a.CredsFile); err != nil {
			return nil, fmt.Errorf("NATS_CREDS: %w", err)
		}
		opts = append(opts, nats.UserCredentials(a.CredsFile))
		methods++
	}
	if a.NkeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(a.NkeySeedFile)
		if err != nil {
			// The error may quote the file; say only what is wrong.
			if rerr := readable(a.NkeySeedFile); rerr != nil {
				return nil, fmt.Errorf("NATS_NKEY_SEED: %w", rerr)
			}
			return nil, errors.New("NATS_NKEY_SEED: the file does not hold a valid user nkey seed")
		}
		opts = append(opts, opt)
		methods++
	}
	if a.User != "" || a.Password != "" {
		if a.User == "" || a.Password == "" {
			return nil, errors.New("NATS_USER and NATS_PASSWORD must be set together")
		}
		opts = append(opts, nats.UserInfo(a.User, a.Password))
		methods++
	}
	if a.Token != "" {
		opts = append(opts, nats.Token(a.Token))
		methods++
	}
	if methods > 1 {
		return nil, errors.New("NATS_CREDS, NATS_NKEY_SEED, NATS_USER/NATS_PASSWORD and NATS_TOKEN are alternatives: set one")
	}
	if a.TLSCAFile != "" {
		if err := readable(a.TLSCAFile); err != nil {
			return nil, fmt.Errorf("NATS_TLS_CA: %w", err)
		}
		opts = append(opts, nats.RootCAs(a.TLSCAFile))
	}
	if a.TLSCertFile != "" || a.TLSKeyFile != "" {
		if a.TLSCertFile == "" || a.TLSKeyFile == "" {
			return nil, errors.New("NATS_TLS_CERT and NATS_TLS_KEY must be set together")
		}
		for name, f := range map[string]string{"NATS_TLS_CERT": a.TLSCertFile, "NATS_TLS_KEY": a.TLSKeyFile} {
			if err := readable(f); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		opts = append(opts, nats.ClientCert(a.TLSCertFile, a.TLSKeyFile))
	}
	return opts, nil
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("file %q does not exist", path)
		}
		return fmt.Errorf("file %q cannot be read", path)
	}
	return f.Close()
}
