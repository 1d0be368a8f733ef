package pipeline.eslocal;

import org.elasticsearch.Build;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.KeyStoreWrapper;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.LocalNode;
import org.elasticsearch.node.Node;
import org.elasticsearch.transport.netty4.Netty4Plugin;
import org.elasticsearch.xpack.core.XPackPlugin;
import org.elasticsearch.xpack.security.local.LocalSecurity;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Starts a genuine single-node Elasticsearch cluster in this JVM, for local runs and tests.
 *
 * <pre>
 *   java -Xms512m -Xmx512m -cp ... pipeline.eslocal.Launcher --port 9200 --home .services/elasticsearch
 * </pre>
 *
 * The node binds HTTP and transport to 127.0.0.1 unless {@code --host} says otherwise,
 * keeps its data under the home directory, and closes cleanly on SIGTERM or SIGINT (a
 * JVM shutdown hook). {@code -E name=value} adds or overrides a node setting, as
 * Elasticsearch's own command line does; the container stand-in in deploy/images
 * passes the image's dotted environment variables that way, so Elasticsearch itself
 * rejects a setting it does not know.
 *
 * Elasticsearch's own security is loaded but off: {@code -E xpack.security.enabled=true}
 * turns it on (users, roles, API keys, TLS; no SAML, see {@link LocalSecurity}). The
 * {@code elastic} user's first password comes from the environment variable
 * {@code ELASTIC_PASSWORD}, kept in an in-memory keystore as {@code bootstrap.password}
 * and never printed.
 */
public final class Launcher {

    public static void main(String[] args) throws Exception {
        Options options;
        try {
            options = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("elasticsearch-local: " + e.getMessage());
            System.err.println(Options.USAGE);
            System.exit(2);
            return;
        }
        if (options.help) {
            System.out.println(Options.USAGE);
            return;
        }

        Path home = options.home.toAbsolutePath();
        Path config = home.resolve("config");
        Files.createDirectories(config);
        try (InputStream log4j = Launcher.class.getResourceAsStream("/log4j2.properties")) {
            Files.copy(log4j, config.resolve("log4j2.properties"), StandardCopyOption.REPLACE_EXISTING);
        }

        Settings.Builder builder = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", options.clusterName)
            .put("node.name", options.clusterName + "-node")
            .put("discovery.type", "single-node")
            .put("network.host", options.host)
            .put("http.port", Integer.toString(options.port))
            .put("transport.port", options.transportPort)
            // A developer machine's disk is shared with everything else; do not turn
            // indices read-only because another program filled it.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.destructive_requires_name", false)
            // Security is on by default in Elasticsearch 8; here it is off unless asked
            // for, so that a plain node answers plain HTTP without credentials.
            .put("xpack.security.enabled", false)
            .put("xpack.license.self_generated.type", "basic");
        options.settings.forEach(builder::put);
        String bootstrapPassword = System.getenv("ELASTIC_PASSWORD");
        if (bootstrapPassword != null && bootstrapPassword.isEmpty() == false) {
            KeyStoreWrapper keystore = KeyStoreWrapper.create();
            keystore.setString("bootstrap.password", bootstrapPassword.toCharArray());
            builder.setSecureSettings(keystore);
        }
        Settings settings = builder.build();
        // -E node.name=es2 names a node of a cluster; its log lines carry that name too.
        String nodeName = settings.get("node.name");

        Environment environment = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> nodeName);
        LogConfigurator.setNodeName(nodeName);
        LogConfigurator.setClusterName(options.clusterName);
        LogConfigurator.configure(environment, true);

        Node node = new LocalNode(
            environment,
            List.of(Netty4Plugin.class, XPackPlugin.class, LocalSecurity.class, SecurityIndexStandIns.class)
        );
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                if (!node.awaitClose(30, TimeUnit.SECONDS)) {
                    System.err.println("elasticsearch-local: node did not close within 30s");
                }
            } catch (IOException | InterruptedException e) {
                System.err.println("elasticsearch-local: closing node: " + e);
            } finally {
                stopped.countDown();
            }
        }, "elasticsearch-local-shutdown"));

        node.start();
        String scheme = settings.getAsBoolean("xpack.security.http.ssl.enabled", false) ? "https" : "http";
        System.out.printf("elasticsearch-local: Elasticsearch %s ready at %s://%s:%d%n", Build.current().version(), scheme, options.host, options.port);
        stopped.await();
    }

    /** Command-line options; every one has a default so a bare start works. */
    static final class Options {
        static final String USAGE = """
            usage: Launcher [--port N] [--transport-port RANGE] [--home DIR] [--cluster-name NAME]
                            [--host ADDR] [-E NAME=VALUE]...
              --port            HTTP port (default 9200)
              --transport-port  transport port or range (default 9300-9399)
              --host            address to bind HTTP and transport to (default 127.0.0.1; 0.0.0.0 in a container)
              -E                a node setting, e.g. -E discovery.type=single-node (repeatable; overrides the defaults)
              --home            directory for config, data and logs (default ./es-home)
              --cluster-name    cluster name (default pipeline-local)
            heap: pass -Xms/-Xmx to java (512m is plenty for tests)
            security: off unless -E xpack.security.enabled=true; then the elastic user's first
              password is $ELASTIC_PASSWORD (an in-memory keystore's bootstrap.password), and
              -E xpack.security.http.ssl.enabled=true with -E xpack.security.http.ssl.certificate=,
              .key= and .certificate_authorities= (PEM files in <home>/config) serves HTTPS.
              No SAML realm.""";

        int port = 9200;
        String transportPort = "9300-9399";
        Path home = Path.of("es-home");
        String clusterName = "pipeline-local";
        String host = "127.0.0.1";
        Map<String, String> settings = new java.util.LinkedHashMap<>();
        boolean help;

        static Options parse(String[] args) {
            Options o = new Options();
            for (int i = 0; i < args.length; i++) {
                String arg = args[i];
                switch (arg) {
                    case "-h", "--help" -> o.help = true;
                    case "--port" -> o.port = Integer.parseInt(value(args, ++i, arg));
                    case "--transport-port" -> o.transportPort = value(args, ++i, arg);
                    case "--home" -> o.home = Path.of(value(args, ++i, arg));
                    case "--cluster-name" -> o.clusterName = value(args, ++i, arg);
                    case "--host" -> o.host = value(args, ++i, arg);
                    case "-E" -> {
                        String setting = value(args, ++i, arg);
                        int eq = setting.indexOf('=');
                        if (eq <= 0) {
                            throw new IllegalArgumentException("-E needs NAME=VALUE, got " + setting);
                        }
                        o.settings.put(setting.substring(0, eq), setting.substring(eq + 1));
                    }
                    default -> throw new IllegalArgumentException("unknown argument " + arg);
                }
            }
            return o;
        }

        private static String value(String[] args, int i, String flag) {
            if (i >= args.length) {
                throw new IllegalArgumentException(flag + " needs a value");
            }
            return args[i];
        }
    }
}
