package org.elasticsearch.plugins;

import org.elasticsearch.Build;
import org.elasticsearch.action.admin.cluster.node.info.PluginsAndModules;
import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.spi.SPIClassIterator;

import java.lang.reflect.Constructor;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A plugins service that instantiates plugin classes already on the classpath,
 * instead of scanning a {@code modules/} directory of a distribution.
 *
 * It lives in Elasticsearch's package because the types it builds on
 * ({@link PluginsLoader}'s constructor, {@code LoadedPlugin}) are package-private;
 * Elasticsearch's own test framework does the same for its MockNode.
 */
public final class ClasspathPluginsService extends PluginsService {

    private final List<LoadedPlugin> loaded;

    public ClasspathPluginsService(Environment environment, Collection<Class<? extends Plugin>> pluginClasses) {
        super(environment.settings(), environment.configDir(), new PluginsLoader(Set.of(), Set.of(), Map.of()));
        List<LoadedPlugin> plugins = new ArrayList<>();
        for (Class<? extends Plugin> pluginClass : pluginClasses) {
            Plugin plugin = loadPlugin(pluginClass, environment.settings(), environment.configDir());
            PluginDescriptor descriptor = new PluginDescriptor(
                pluginClass.getSimpleName(),
                "classpath module",
                Build.current().version(),
                Build.current().version(),
                Integer.toString(Runtime.version().feature()),
                pluginClass.getName(),
                null,
                List.of(),
                false,
                false,
                false,
                false
            );
            plugins.add(new LoadedPlugin(descriptor, plugin, pluginClass.getClassLoader()));
        }
        loadExtensions(plugins);
        this.loaded = List.copyOf(plugins);
    }

    @Override
    protected List<LoadedPlugin> plugins() {
        return loaded;
    }

    /**
     * Finds the providers of {@code service} once, on the one class loader every plugin
     * shares here, and builds each with the plugin its constructor asks for.
     *
     * Elasticsearch's own lookup runs once per plugin, on that plugin's class loader, and
     * hands the provider that plugin. With one shared loader it would offer every provider
     * to every plugin, and fail with "signature of constructor for extension … must be
     * either () or (Netty4Plugin)" for x-pack's providers. A provider whose plugin is not
     * loaded is left out, as it would be in a distribution without that module. The
     * parameter is matched with {@code isInstance}, not by exact class as Elasticsearch
     * does, so that a subclass such as the launcher's LocalSecurity counts as Security.
     */
    @Override
    public <T> List<? extends T> loadServiceProviders(Class<T> service) {
        List<T> result = new ArrayList<>();
        SPIClassIterator<T> providers = SPIClassIterator.get(service, ClasspathPluginsService.class.getClassLoader());
        while (providers.hasNext()) {
            Class<? extends T> provider = providers.next();
            Constructor<?> constructor = preferredConstructor(provider, service);
            try {
                if (constructor.getParameterCount() == 0) {
                    result.add(service.cast(constructor.newInstance()));
                    continue;
                }
                Class<?> wanted = constructor.getParameterTypes()[0];
                for (LoadedPlugin plugin : plugins()) {
                    if (wanted.isInstance(plugin.instance())) {
                        result.add(service.cast(constructor.newInstance(plugin.instance())));
                        break;
                    }
                }
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("failed to create extension [" + provider.getName() + "] of type [" + service.getName() + "]", e);
            }
        }
        return Collections.unmodifiableList(result);
    }

    /** The constructor Elasticsearch would pick: the only public one, or the one-argument one of two. */
    private static Constructor<?> preferredConstructor(Class<?> provider, Class<?> service) {
        Constructor<?>[] constructors = provider.getConstructors();
        Constructor<?> chosen = null;
        for (Constructor<?> c : constructors) {
            if (c.getParameterCount() > 1) {
                continue;
            }
            if (chosen == null || c.getParameterCount() > chosen.getParameterCount()) {
                chosen = c;
            }
        }
        if (chosen == null || constructors.length > 2) {
            throw new IllegalStateException(
                "extension [" + provider.getName() + "] of type [" + service.getName() + "] needs a public constructor () or (a plugin)"
            );
        }
        return chosen;
    }

    @Override
    public PluginsAndModules info() {
        return new PluginsAndModules(List.of(), loaded.stream().map(LoadedPlugin::descriptor).toList());
    }
}
