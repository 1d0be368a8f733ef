package org.elasticsearch.xpack.security.local;

import org.elasticsearch.action.ActionRequest;
import org.elasticsearch.action.ActionResponse;
import org.elasticsearch.cluster.metadata.IndexNameExpressionResolver;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.common.io.stream.NamedWriteableRegistry;
import org.elasticsearch.common.settings.ClusterSettings;
import org.elasticsearch.common.settings.IndexScopedSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.settings.SettingsFilter;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.xpack.security.Security;

import java.util.List;
import java.util.function.Predicate;
import java.util.function.Supplier;

/**
 * Elasticsearch's security plugin without SAML, for the local launcher.
 *
 * SAML needs OpenSAML and Shibboleth's libraries, which are published only to
 * Shibboleth's own repository, so the launcher's pom excludes them; building SAML's
 * transport actions would then fail with NoClassDefFoundError. Everything else
 * (native and file realms, roles, API keys, TLS) is Elasticsearch's own code.
 *
 * It lives under {@code org.elasticsearch.xpack.} because Elasticsearch lets only
 * plugins there install the REST interceptor that security authenticates with.
 */
public class LocalSecurity extends Security {

    public LocalSecurity(Settings settings) {
        super(settings);
    }

    @Override
    public List<ActionHandler<? extends ActionRequest, ? extends ActionResponse>> getActions() {
        return super.getActions().stream().filter(h -> isSaml(h.getTransportAction()) == false).toList();
    }

    @Override
    public List<RestHandler> getRestHandlers(
        Settings settings,
        NamedWriteableRegistry namedWriteableRegistry,
        RestController restController,
        ClusterSettings clusterSettings,
        IndexScopedSettings indexScopedSettings,
        SettingsFilter settingsFilter,
        IndexNameExpressionResolver indexNameExpressionResolver,
        Supplier<DiscoveryNodes> nodesInCluster,
        Predicate<NodeFeature> clusterSupportsFeature
    ) {
        return super.getRestHandlers(
            settings,
            namedWriteableRegistry,
            restController,
            clusterSettings,
            indexScopedSettings,
            settingsFilter,
            indexNameExpressionResolver,
            nodesInCluster,
            clusterSupportsFeature
        ).stream().filter(h -> isSaml(h.getClass()) == false).toList();
    }

    /** SAML's actions and REST handlers are the classes in security's {@code …action.saml} packages. */
    private static boolean isSaml(Class<?> c) {
        return c.getPackageName().endsWith(".action.saml");
    }
}
