package dev.quarry.opensearch;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.common.settings.Settings;
import org.opensearch.core.common.transport.TransportAddress;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * One OpenSearch node for tests: HTTP and transport on loopback, single-node discovery, no
 * security plugin, data and logs under one directory, the bundled modules Quarry's adapter needs
 * loaded from the classpath (a distribution loads them from its modules/ folder).
 *
 * <p>Usage: {@code TestNode <home-dir> <http-port> [cluster-name [setting=value ...]]}: the settings
 * are added to (or override) the defaults below. Port 0 binds a free port. Once
 * the node has started, one line {@code QUARRY_OPENSEARCH_HTTP=127.0.0.1:<port>} goes to stdout.
 * SIGTERM closes the node (flushing its shards), so a restart on the same directory finds every
 * index again.
 */
public final class TestNode extends Node {

    private static final Collection<Class<? extends Plugin>> PLUGINS = List.of(
        Netty4Plugin.class, CommonAnalysisPlugin.class, ReindexPlugin.class, PainlessPlugin.class);

    private TestNode(Environment environment) {
        // Node's constructor with classpath plugins is protected: this subclass is what exposes it.
        super(environment, PLUGINS, true);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: TestNode <home-dir> <http-port> [cluster-name [setting=value ...]]");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        Files.createDirectories(home.resolve("config"));
        Settings.Builder builder = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", args.length > 2 ? args[2] : "quarry-test")
            .put("node.name", "quarry-test-node")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", args[1].equals("0") ? "0" : args[1])
            .put("transport.port", "0")
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // Tests share disks that are often nearly full: never refuse to allocate a shard.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // Background work a test node does not need, on 2 shared cores.
            .put("indices.recovery.max_bytes_per_sec", "0")
            .put("search.concurrent_segment_search.enabled", false)
            .put("node.processors", Math.min(2, Runtime.getRuntime().availableProcessors()));
        for (int i = 3; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("not a setting=value pair: " + args[i]);
                System.exit(2);
            }
            builder.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }
        Settings settings = builder.build();
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings, Map.of(), home.resolve("config"), () -> "quarry-test-node");
        TestNode node = new TestNode(environment);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "quarry-test-node-shutdown"));
        node.start();
        TransportAddress http = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress();
        System.out.println("QUARRY_OPENSEARCH_HTTP=" + http.getAddress() + ":" + http.getPort());
        System.out.flush();
        stopped.await();
    }
}
