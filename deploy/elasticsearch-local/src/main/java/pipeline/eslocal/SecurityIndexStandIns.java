package pipeline.eslocal;

import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.Tokenizer;
import org.apache.lucene.analysis.email.UAX29URLEmailTokenizer;
import org.apache.lucene.analysis.miscellaneous.RemoveDuplicatesTokenFilter;
import org.apache.lucene.analysis.pattern.PatternCaptureGroupTokenFilter;
import org.apache.lucene.analysis.standard.StandardAnalyzer;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.index.IndexSettings;
import org.elasticsearch.index.analysis.AbstractTokenFilterFactory;
import org.elasticsearch.index.analysis.AbstractTokenizerFactory;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.index.analysis.TokenizerFactory;
import org.elasticsearch.index.mapper.Mapper;
import org.elasticsearch.index.mapper.TextFieldMapper;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.MapperPlugin;
import org.elasticsearch.plugins.Plugin;

import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * Stand-ins for the pieces of Elasticsearch's analysis-common and mapper-extras modules
 * that the security index ({@code .security-7}) names in its settings and mappings.
 * Those modules are not on Maven Central; without these, creating the first user, role
 * or API key fails with "Unknown filter type [pattern_capture]".
 *
 * This is a stand-in, not the modules themselves:
 * <ul>
 *   <li>{@code pattern_capture} and {@code uax_url_email} are Lucene's own filter and
 *       tokenizer, configured as the modules configure them;</li>
 *   <li>{@code unique} is Lucene's RemoveDuplicatesTokenFilter, which drops a repeated
 *       term only at the same position. That is all the security index's email analyzer
 *       needs (its pattern_capture adds every group at the original's position), but it
 *       is not the module's whole-stream {@code unique};</li>
 *   <li>{@code search_as_you_type} is mapped as plain {@code text}: no shingle or prefix
 *       subfields. Only user-profile fields use it, so profile suggestions match whole
 *       words only.</li>
 * </ul>
 * Indices of our own should not use these names: they behave differently on a real node.
 */
public final class SecurityIndexStandIns extends Plugin implements AnalysisPlugin, MapperPlugin {

    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        return Map.of(
            "pattern_capture", AnalysisPlugin.requiresAnalysisSettings(PatternCapture::new),
            "unique", (indexSettings, environment, name, settings) -> new AbstractTokenFilterFactory(name, settings) {
                @Override
                public TokenStream create(TokenStream input) {
                    return new RemoveDuplicatesTokenFilter(input);
                }
            }
        );
    }

    @Override
    public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
        return Map.of("uax_url_email", (indexSettings, environment, name, settings) -> {
            int maxTokenLength = settings.getAsInt("max_token_length", StandardAnalyzer.DEFAULT_MAX_TOKEN_LENGTH);
            return new AbstractTokenizerFactory(indexSettings, settings, name) {
                @Override
                public Tokenizer create() {
                    UAX29URLEmailTokenizer tokenizer = new UAX29URLEmailTokenizer();
                    tokenizer.setMaxTokenLength(maxTokenLength);
                    return tokenizer;
                }
            };
        });
    }

    @Override
    public Map<String, Mapper.TypeParser> getMappers() {
        return Map.of("search_as_you_type", TextFieldMapper.PARSER);
    }

    /** {@code pattern_capture}: each capture group of each pattern becomes a token. */
    private static final class PatternCapture extends AbstractTokenFilterFactory {
        private final Pattern[] patterns;
        private final boolean preserveOriginal;

        PatternCapture(IndexSettings indexSettings, Environment environment, String name, Settings settings) {
            super(name, settings);
            List<String> regexes = settings.getAsList("patterns");
            if (regexes.isEmpty()) {
                throw new IllegalArgumentException("required setting 'patterns' is missing for token filter [" + name + "]");
            }
            this.patterns = regexes.stream().map(Pattern::compile).toArray(Pattern[]::new);
            this.preserveOriginal = settings.getAsBoolean("preserve_original", true);
        }

        @Override
        public TokenStream create(TokenStream input) {
            return new PatternCaptureGroupTokenFilter(input, preserveOriginal, patterns);
        }
    }
}
