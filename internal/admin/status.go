package admin

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// clusterStatuses are the values of the cluster status gauge, in the order of
// their gravity, so that max() over replicas is the worst any of them sees.
var clusterStatuses = map[string]float64{"green": 0, "yellow": 1, "red": 2}

// ElasticsearchStatus registers <binary>_elasticsearch_cluster_status, which asks
// health at each scrape for the status Elasticsearch gives the pipeline's indices
// (green, yellow or red) and reports it as 0, 1 or 2. When health fails, the
// scrape has no value rather than a made-up one: readiness and the binaries'
// other metrics tell an unreachable cluster.
func ElasticsearchStatus(reg prometheus.Registerer, binary string, health func(context.Context) (string, error)) {
	reg.MustRegister(&statusCollector{
		desc: prometheus.NewDesc(binary+"_elasticsearch_cluster_status",
			"Health Elasticsearch gives the pipeline's indices (ES_INDEX_PREFIX-*): 0 green, 1 yellow (a replica missing), 2 red (a primary shard without a copy: every read fails). Asked at each scrape; absent when Elasticsearch does not answer.",
			nil, nil),
		health: health,
	})
}

type statusCollector struct {
	desc   *prometheus.Desc
	health func(context.Context) (string, error)
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	if c.health == nil {
		return
	}
	// A scrape has no context of its own; a readiness probe's bound keeps a slow
	// cluster from holding it.
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	status, err := c.health(ctx)
	if v, known := clusterStatuses[status]; err == nil && known {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v)
	}
}
