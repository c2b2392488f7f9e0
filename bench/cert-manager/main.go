// Minimal cert-manager controller for the trustwarden benchmark.
//
// The upstream controller binary lives in the nested module
// github.com/cert-manager/cert-manager/cmd/controller, which the Go module proxy does not
// serve. Its controllers, however, live in the main module (pkg/controller/...), register
// themselves in init(), and are wired by a ContextFactory. This main does what the upstream
// app.Run does for the controllers a CA ClusterIssuer needs: the Certificate pipeline
// (trigger, key-manager, request-manager, issuing, readiness, revision-manager), the
// CertificateRequest approver and CA signer, and the Issuer/ClusterIssuer controllers.
// Leader election, metrics/healthz servers, ACME, Vault, Venafi and the shims are left out.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
)

var version = "unknown"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "path to a kubeconfig")
	clusterNS := flag.String("cluster-resource-namespace", "cert-manager", "namespace of ClusterIssuer secrets")
	workers := flag.Int("concurrent-workers", 5, "workers per controller (upstream default 5)")
	qps := flag.Float64("kube-api-qps", 20, "client QPS when API Priority and Fairness is off (upstream default 20)")
	burst := flag.Int("kube-api-burst", 50, "client burst when API Priority and Fairness is off (upstream default 50)")
	leaderElect := flag.Bool("leader-elect", false, "accepted for compatibility; leader election is not implemented here")
	showVersion := flag.Bool("version", false, "print the cert-manager version and exit")
	klog.InitFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	if *leaderElect {
		fmt.Fprintln(os.Stderr, "leader election is not supported by this benchmark build")
		os.Exit(2)
	}
	logf.InitLogs()
	defer logf.FlushLogs()

	rootCtx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rootCtx = logf.NewContext(rootCtx, logf.Log, "controller")
	log := logf.FromContext(rootCtx)

	factory, err := controller.NewContextFactory(rootCtx, controller.ContextOptions{
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   float32(*qps),
		KubernetesAPIBurst: *burst,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace: *clusterNS,
		},
	})
	if err != nil {
		log.Error(err, "building the controller context")
		os.Exit(1)
	}
	ctx, err := factory.Build()
	if err != nil {
		log.Error(err, "building the base context")
		os.Exit(1)
	}
	names := make([]string, 0, len(controller.Known()))
	for n := range controller.Known() {
		names = append(names, n)
	}
	sort.Strings(names)
	log.Info("starting controllers", "version", version, "controllers", names)

	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for _, n := range names {
		iface, err := controller.Known()[n](factory)
		if err != nil {
			log.Error(err, "constructing controller", "controller", n)
			os.Exit(1)
		}
		wg.Add(1)
		go func(n string, c controller.Interface) {
			defer wg.Done()
			if err := c.Run(*workers, rootCtx); err != nil {
				errs <- fmt.Errorf("%s: %w", n, err)
				cancel()
			}
		}(n, iface)
	}
	ctx.SharedInformerFactory.Start(rootCtx.Done())
	ctx.KubeSharedInformerFactory.Start(rootCtx.Done())
	ctx.HTTP01ResourceMetadataInformersFactory.Start(rootCtx.Done())
	wg.Wait()
	close(errs)
	code := 0
	for err := range errs {
		log.Error(err, "controller failed")
		code = 1
	}
	os.Exit(code)
}
