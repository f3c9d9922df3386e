// Package e2e drives the running control plane from outside: a real
// Chromium (through chromedp) clicks through the dashboard, and raw HTTP and
// TCP clients attack the event stream and the CSRF guard. Every test starts
// the product with cli.Start on 127.0.0.1 and a Redis database from testenv.
//
// The package holds only tests; run it with
//
//	REDIS_TEST_ADDR=127.0.0.1:6379 CONTROLPLANE_REQUIRE_SERVICES=1 go test ./app/e2e/ -count=1 -v
//
// Without /usr/bin/chromium the browser tests skip, or fail when
// CONTROLPLANE_REQUIRE_SERVICES=1.
package e2e
