package e2e

import (
	"os"
	"testing"

	"github.com/verifier/controlplane/app/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
